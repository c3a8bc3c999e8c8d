// The command-line options that choose where tether-server's state lives,
// shared by `serve` and the admin commands, and the ClusterAdmin an admin
// command acts on: the store itself, or a running server's admin API when
// --credential names an admin credential.
import { type Command, Option } from "commander";
import { readAdminCredentialFile } from "../admin/admin-credential.js";
import { normalizeServerUrl } from "../admin/admin-input.js";
import { type ClusterAdmin, storeAdmin } from "../admin/cluster-admin.js";
import { RemoteClusterAdmin } from "../admin/remote-cluster-admin.js";
import type { Logger } from "../logger.js";
import { defaultStateDir, FileStore } from "../store/file-store.js";
import { DEFAULT_NAMESPACE, KubeStore } from "../store/kube-store.js";
import type { Store } from "../store/state-store.js";

export interface StoreOptions {
  stateDir: string;
  store?: "file" | "kubernetes";
  kubeconfig?: string;
  context?: string;
  namespace?: string;
  /** Admin commands only: an admin credential file; the command then goes through the server's admin API. */
  credential?: string;
}

/** Adds the store-choosing options to `cmd`. */
export function addStoreOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option("--store <kind>", "where state lives: file (--state-dir) or kubernetes (the host cluster)")
        .choices(["file", "kubernetes"])
        .default("file")
        .env("TETHER_STORE"),
    )
    .addOption(
      new Option(
        "--state-dir <dir>",
        "file store: where the CA, clusters and token hashes live (env TETHER_STATE_DIR)",
      ).default(defaultStateDir()),
    )
    .addOption(
      new Option(
        "--kubeconfig <file>",
        "kubernetes store: the host cluster's kubeconfig (default: in-cluster service account)",
      ).env("TETHER_KUBECONFIG"),
    )
    .addOption(new Option("--context <name>", "kubernetes store: kubeconfig context (default: current)"))
    .addOption(
      new Option("--namespace <ns>", "kubernetes store: namespace of Tether's Secrets and ConfigMaps")
        .default(DEFAULT_NAMESPACE)
        .env("TETHER_NAMESPACE"),
    );
}

/** The store options plus --credential, for the admin commands. */
export function addAdminOptions(cmd: Command): Command {
  return addStoreOptions(cmd).addOption(
    new Option(
      "--credential <file>",
      "act on a running tether-server through its admin API with this admin credential " +
        "(serve writes it to <state-dir>/admin-credential.json); --server overrides its URL",
    ).env("TETHER_ADMIN_CREDENTIAL"),
  );
}

const opened: KubeStore[] = [];

export async function openStore(opts: StoreOptions, log?: Logger): Promise<Store> {
  if (opts.store !== "kubernetes") return FileStore.open(opts.stateDir);
  const store = await KubeStore.open({
    namespace: opts.namespace ?? DEFAULT_NAMESPACE,
    ...(log ? { log } : {}),
    ...(opts.kubeconfig ? { kubeconfig: opts.kubeconfig } : {}),
    ...(opts.context ? { context: opts.context } : {}),
  });
  return store;
}

/** Stops the watches of stores an admin command opened, so that the process can exit. */
export async function closeOpenedStores(): Promise<void> {
  await Promise.all(opened.splice(0).map((s) => s.close()));
}

/** The ClusterAdmin for an admin command with these options and its --server flag. */
export async function adminFor(opts: StoreOptions, serverFlag?: string): Promise<ClusterAdmin> {
  if (opts.credential) {
    const credential = await readAdminCredentialFile(opts.credential);
    return new RemoteClusterAdmin(
      credential,
      serverFlag === undefined ? undefined : normalizeServerUrl(serverFlag, "--server"),
    );
  }
  const store = await openStore(opts);
  if (store instanceof KubeStore) opened.push(store);
  return storeAdmin(store, serverFlag);
}
