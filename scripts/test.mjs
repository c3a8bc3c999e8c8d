// `npm test`: type-check and build, build the Kubernetes harness when it is
// not cached, run every test file with tap, and end with one plain line
// "N passed, N failed" (N counts assertions, as tap does).
import { spawn, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { onPinnedNode } from "./node-runtime.mjs";

await onPinnedNode(import.meta.url);

const root = fileURLToPath(new URL("..", import.meta.url));
const bin = (name) => `${root}node_modules/.bin/${name}`;
const patterns = process.argv.slice(2);
const files = patterns.length > 0 ? patterns : ["packages/*/test/**/*.test.ts", "test/**/*.test.ts"];

function step(title, cmd, args) {
  console.log(`\n== ${title}`);
  const started = Date.now();
  const r = spawnSync(cmd, args, { cwd: root, stdio: "inherit" });
  if (r.status !== 0) {
    console.log(`${title} failed`);
    console.log("0 passed, 1 failed");
    process.exit(1);
  }
  console.log(`== ${title}: ok in ${((Date.now() - started) / 1000).toFixed(1)}s`);
}

step("type-check and build (tsc -b)", bin("tsc"), ["-b"]);
step("Kubernetes harness binaries", bin("tsx"), ["test/kube/cli.ts", "build"]);

console.log(`\n== tap ${files.join(" ")}`);
const tap = spawn(bin("tap"), ["--reporter=tap", ...files], {
  cwd: root,
  stdio: ["ignore", "pipe", "inherit"],
});
let summary;
let carry = "";
tap.stdout.setEncoding("utf8").on("data", (chunk) => {
  process.stdout.write(chunk);
  const lines = (carry + chunk).split("\n");
  carry = lines.pop() ?? "";
  for (const line of lines) {
    // tap's closing line: "# { total: 41, pass: 40, fail: 1, skip: 0 }"
    const m = line.match(/^# \{ total: \d+.*\}$/);
    if (m) summary = line;
  }
});
tap.on("exit", (code) => {
  const count = (key) => Number(summary?.match(new RegExp(`${key}: (\\d+)`))?.[1] ?? 0);
  const passed = count("pass");
  const failed = summary ? count("fail") : Math.max(1, count("fail"));
  const skipped = count("skip") + count("todo");
  console.log(
    `\n${passed} passed, ${failed + (code !== 0 && failed === 0 ? 1 : 0)} failed${skipped ? `, ${skipped} skipped` : ""}`,
  );
  process.exit(code ?? 1);
});
