// The runtime is the Node line pinned in .node-version: the tests, the processes they start (with
// process.execPath, as the e2e fixtures start tether-server and tether-agent) and the `node` that
// `#!/usr/bin/env node` tools (tsx, tsc, tap) find on PATH all run on it; engines and the image follow
// its major. scripts/node-runtime.mjs, which makes that so on a machine whose node is older, runs the
// calling script again under the cached pinned build: same arguments, that build first on PATH, its exit
// status or signal passed back, and nothing after the call runs in the older node. The two commands
// refuse an older node with a coded one-line error before loading anything.
import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { fileURLToPath } from "node:url";
import t from "tap";

const root = fileURLToPath(new URL("..", import.meta.url));
const pinned = readFileSync(join(root, ".node-version"), "utf8").trim();
const major = Number(pinned.split(".")[0]);
const majorOf = (version: string) => Number(version.trim().replace(/^v/, "").split(".")[0]);

t.test("the suite and every process it starts run on the pinned major", async (t) => {
  t.ok(major >= 24, `.node-version pins a supported LTS line (${pinned})`);
  t.ok(majorOf(process.version) >= major, `this test runs on ${process.version}`);
  const child = spawnSync(process.execPath, ["-p", "process.version"], { encoding: "utf8" });
  t.ok(
    majorOf(child.stdout) >= major,
    `a child started with process.execPath runs on ${child.stdout.trim()}`,
  );
  const onPath = spawnSync("node", ["-p", "process.version"], { encoding: "utf8" });
  t.ok(majorOf(onPath.stdout) >= major, `the node on PATH is ${onPath.stdout.trim()}`);
  const tsx = spawnSync(join(root, "node_modules/.bin/tsx"), ["-e", "console.log(process.version)"], {
    encoding: "utf8",
  });
  t.ok(majorOf(tsx.stdout) >= major, `tsx runs on ${tsx.stdout.trim()}`);
});

t.test("engines and the image follow .node-version", async (t) => {
  for (const dir of [".", "packages/tunnel", "packages/server", "packages/agent"]) {
    const pkg = JSON.parse(readFileSync(join(root, dir, "package.json"), "utf8"));
    t.equal(pkg.engines?.node, `>=${major}`, `${dir}/package.json engines.node`);
  }
  const dockerfile = readFileSync(join(root, "Dockerfile"), "utf8");
  const bases = [...dockerfile.matchAll(/^FROM (\S+)/gm)].map((m) => m[1]);
  t.ok(bases.length > 0, "the Dockerfile has stages");
  for (const base of bases) {
    t.match(base, new RegExp(`^(node:${major}-|gcr\\.io/distroless/nodejs${major}-)`), `FROM ${base}`);
  }
});

t.test("an older node runs the script again under the cached pinned build", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "tether-node-runtime-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const pkg = `${process.platform === "darwin" && process.arch === "arm64" ? "node-bin" : "node"}-${process.platform}-${process.arch}`;
  const binDir = join(dir, "cache", "tether", "node", `${pkg}-${pinned}`, "node_modules", pkg, "bin");
  mkdirSync(binDir, { recursive: true });
  const fakeNode = join(binDir, "node");
  // Stands in for the pinned build: reports how it was started and ends as $FAKE_EXIT says.
  writeFileSync(
    fakeNode,
    `#!/bin/sh\nprintf 'arg=%s\\n' "$@"\nprintf 'PATH=%s\\n' "$PATH"\n[ "$FAKE_EXIT" = TERM ] && kill -TERM $$\nexit "$FAKE_EXIT"\n`,
  );
  chmodSync(fakeNode, 0o755);
  const older = join(dir, "older.mjs");
  writeFileSync(older, `Object.defineProperty(process, "version", { value: "v20.0.0" });\n`);
  const probe = join(dir, "probe.mjs");
  const runtime = new URL("../scripts/node-runtime.mjs", import.meta.url).href;
  writeFileSync(
    probe,
    `import { onPinnedNode } from ${JSON.stringify(runtime)};\nawait onPinnedNode(import.meta.url);\nconsole.log("ran in the caller's node");\n`,
  );
  const run = (nodeArgs: string[], fakeExit: string) =>
    spawnSync(process.execPath, [...nodeArgs, probe, "first", "two words"], {
      encoding: "utf8",
      env: { ...process.env, XDG_CACHE_HOME: join(dir, "cache"), FAKE_EXIT: fakeExit },
    });

  const current = run([], "0");
  t.equal(current.status, 0);
  t.equal(current.stdout, "ran in the caller's node\n", "a node of the pinned major runs the script itself");

  const again = run([`--import=${older}`], "7");
  t.equal(again.status, 7, "the pinned build's exit status is the script's");
  const lines = again.stdout.split("\n");
  t.same(lines.slice(0, 3), [`arg=${probe}`, "arg=first", "arg=two words"], "same script, same arguments");
  t.equal(lines[3]?.split("=", 2)[1]?.split(delimiter)[0], binDir, "the pinned build is first on PATH");
  t.notMatch(again.stdout, /ran in the caller's node/, "the older node runs nothing after the call");

  const killed = run([`--import=${older}`], "TERM");
  t.equal(killed.signal, "SIGTERM", "a signal that ends the pinned build ends the script the same way");
});

t.test(
  "tether-server and tether-agent name the Node they need instead of failing in a dependency",
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "tether-node-runtime-"));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const older = join(dir, "older.mjs");
    writeFileSync(older, `Object.defineProperty(process, "version", { value: "v20.20.2" });\n`);
    for (const name of ["server", "agent"]) {
      const bin = join(root, `packages/${name}/bin/tether-${name}.js`);
      const refused = spawnSync(process.execPath, [`--import=${older}`, bin, "--help"], { encoding: "utf8" });
      t.equal(refused.status, 1, `tether-${name} exits 1 on v20.20.2`);
      t.equal(
        refused.stderr,
        `ERR_TETHER_NODE_VERSION: tether-${name} needs Node.js ${major} or newer (this is v20.20.2)\n`,
      );
      const help = spawnSync(process.execPath, [bin, "--help"], { encoding: "utf8" });
      t.equal(help.status, 0, `tether-${name} --help runs on ${process.version}`);
    }
  },
);
