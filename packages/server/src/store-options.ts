// The command-line options that choose where tether-server's state lives, shared
// by `serve` and the admin commands, and the ClusterAdmin an admin command
// acts on.
import { type Command, Option } from "commander";
import { type ClusterAdmin, storeAdmin } from "./cluster-admin.js";
import { defaultStateDir, FileStore, type Store } from "./state-store.js";

export interface StoreOptions {
  stateDir: string;
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

export async function openStore(opts: StoreOptions): Promise<Store> {
  return FileStore.open(opts.stateDir);
}

/** The ClusterAdmin for an admin command with these options and its --server flag. */
export async function adminFor(opts: StoreOptions, serverFlag?: string): Promise<ClusterAdmin> {
  return storeAdmin(await openStore(opts), serverFlag);
}
