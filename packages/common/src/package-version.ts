// A package's version from its own package.json, read next to the module that
// asks (src/ when run from source, dist/ when built: both sit one level down).
import { readFileSync } from "node:fs";

export function packageVersion(moduleUrl: string): string {
  return (JSON.parse(readFileSync(new URL("../package.json", moduleUrl), "utf8")) as { version: string })
    .version;
}
