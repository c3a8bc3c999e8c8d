// The Store contract (store-contract.ts) on FileStore.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { FileStore } from "../../src/store/file-store.js";
import { storeContract } from "./store-contract.js";

const dir = await mkdtemp(join(tmpdir(), "tether-contract-"));
t.teardown(() => rm(dir, { recursive: true, force: true }));
await storeContract(t, () => FileStore.open(join(dir, "state")));
