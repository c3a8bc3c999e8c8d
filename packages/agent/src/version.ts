// The agent's version, from its package.json: printed by --version and sent to
// the server (X-Tether-Agent-Version) for the cluster's status.
import { readFileSync } from "node:fs";

export const VERSION: string = JSON.parse(
  readFileSync(new URL("../package.json", import.meta.url), "utf8"),
).version;
