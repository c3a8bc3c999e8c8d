// `npm run demo`: installs what a fresh clone lacks (npm ci, the build, the
// Kubernetes harness binaries), then runs scripts/demo.ts with the arguments
// given after `--` (e.g. `npm run demo -- --once`).
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { onPinnedNode } from "./node-runtime.mjs";

await onPinnedNode(import.meta.url);

const root = fileURLToPath(new URL("..", import.meta.url));
const bin = (name) => `${root}node_modules/.bin/${name}`;

function step(title, cmd, args) {
  console.log(`== ${title}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: "inherit" });
  if (r.status !== 0) {
    console.log(`${title} failed`);
    process.exit(r.status ?? 1);
  }
}

step("dependencies", process.execPath, [`${root}scripts/ensure-install.mjs`]);
step("build (tsc -b)", bin("tsc"), ["-b"]);
step("Kubernetes harness binaries (about 6 minutes the first time, cached after)", bin("tsx"), [
  "test/kube/cli.ts",
  "build",
]);
const demo = spawnSync(
  bin("tsx"),
  ["--conditions=tether-source", "scripts/demo.ts", ...process.argv.slice(2)],
  { cwd: root, stdio: "inherit" },
);
process.exit(demo.status ?? 1);
