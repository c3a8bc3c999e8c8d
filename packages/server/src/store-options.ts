// The command-line options that choose where tether-server's state lives,
// shared by `serve` and the admin commands, and the ClusterAdmin an admin
// command acts on: the store itself, or a running server's admin API when
// --credential names an admin credential.
import { type Command, Option } from "commander";
import { readAdminCredentialFile } from "./admin-credential.js";
import { normalizeServerUrl } from "./admin-input.js";
import { type ClusterAdmin, storeAdmin } from "./cluster-admin.js";
import { RemoteClusterAdmin } from "./remote-cluster-admin.js";
import { defaultStateDir, FileStore, type Store } from "./state-store.js";

export interface StoreOptions {
  stateDir: string;
  /** Admin commands only: an admin credential file; the command then goes through the server's admin API. */
  credential?: string;
}

/** Adds the store-choosing options to `cmd`. */
export function addStoreOptions(cmd: Command): Command {
  return cmd.addOption(
    new Option(
      "--state-dir <dir>",
      "where the CA, clusters and token hashes live (env TETHER_STATE_DIR)",
    ).default(defaultStateDir()),
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

export async function openStore(opts: StoreOptions): Promise<Store> {
  return FileStore.open(opts.stateDir);
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
  return storeAdmin(await openStore(opts), serverFlag);
}
