// tether-server's version, from its package.json: printed by --version and the
// tag of the container image the generated manifests reference.
import { readFileSync } from "node:fs";

export const VERSION: string = JSON.parse(
  readFileSync(new URL("../package.json", import.meta.url), "utf8"),
).version;
