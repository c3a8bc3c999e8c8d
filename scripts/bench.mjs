// `npm run bench -- <suite> [--quick] [--json]`: builds, then runs bench/run.ts under the pinned Node
// (the e2e suite's clients need Node 24), with the arguments given after `--`.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { onPinnedNode } from "./node-runtime.mjs";

await onPinnedNode(import.meta.url);

const root = fileURLToPath(new URL("..", import.meta.url));
const bin = (name) => `${root}node_modules/.bin/${name}`;
const build = spawnSync(bin("tsc"), ["-b"], { cwd: root, stdio: "inherit" });
if (build.status !== 0) process.exit(build.status ?? 1);
const run = spawnSync(bin("tsx"), ["--conditions=tether-source", "bench/run.ts", ...process.argv.slice(2)], {
  cwd: root,
  stdio: "inherit",
});
process.exit(run.status ?? 1);
