// `npm run bench -- <suite> [--quick] [--json]`: installs what a fresh clone lacks, builds, then runs bench/run.ts under the pinned Node
// (the e2e suite's clients need Node 24), with the arguments given after `--`.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { onPinnedNode } from "./node-runtime.mjs";

await onPinnedNode(import.meta.url);

const root = fileURLToPath(new URL("..", import.meta.url));
const bin = (name) => `${root}node_modules/.bin/${name}`;
// A fresh clone has no node_modules yet: install as `npm test` and `npm run demo` do, then build.
for (const [cmd, args] of [
  [process.execPath, [`${root}scripts/ensure-install.mjs`]],
  [bin("tsc"), ["-b"]],
]) {
  const step = spawnSync(cmd, args, { cwd: root, stdio: "inherit" });
  if (step.status !== 0) process.exit(step.status ?? 1);
}
const run = spawnSync(bin("tsx"), ["--conditions=tether-source", "bench/run.ts", ...process.argv.slice(2)], {
  cwd: root,
  stdio: "inherit",
});
process.exit(run.status ?? 1);
