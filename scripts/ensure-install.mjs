// Runs before `npm test`: installs exactly what package-lock.json pins when
// node_modules is missing or was installed from a different lockfile, so a
// fresh clone needs nothing but `npm test`.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { onPinnedNode } from "./node-runtime.mjs";

await onPinnedNode(import.meta.url);

const root = fileURLToPath(new URL("..", import.meta.url));
const marker = `${root}node_modules/.tether-lock-hash`;
const hash = createHash("sha256")
  .update(readFileSync(`${root}package-lock.json`))
  .digest("hex");
const installed = existsSync(marker) ? readFileSync(marker, "utf8") : "";

if (installed !== hash) {
  console.log("npm test: installing dependencies (npm ci)");
  const npm = process.env.npm_execpath ? [process.execPath, [process.env.npm_execpath]] : ["npm", []];
  execFileSync(npm[0], [...npm[1], "ci", "--no-audit", "--no-fund"], { cwd: root, stdio: "inherit" });
  // tap compiles its plugin set (ours drops @tapjs/typescript for tsx) into its runner.
  execFileSync(process.execPath, [`${root}node_modules/tap/dist/esm/run.mjs`, "build"], {
    cwd: root,
    stdio: "inherit",
  });
  writeFileSync(marker, hash);
}
