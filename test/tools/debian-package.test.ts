// ensureDebianPackage against a fake apt-get on PATH: a present package runs no
// apt at all, a missing one is installed once even when several test processes
// ask at the same moment (the second finds it under the lock), a failing
// install says what to run by hand.
import { execFile } from "node:child_process";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import t from "tap";
import { ensureDebianPackage, isInstalled } from "./debian-package.js";

const run = promisify(execFile);
const dir = await mkdtemp(join(tmpdir(), "tether-debian-package-"));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const calls = join(dir, "calls");
const installed = join(dir, "installed-file");
// Slow enough that two unlocked callers would both install.
await writeFile(
  join(dir, "apt-get"),
  `#!/bin/sh\necho "$*" >> ${calls}\nsleep 0.5\n[ "$1" = install ] && [ "$5" = broken ] && exit 100\n[ "$1" = install ] && touch ${installed}\nexit 0\n`,
);
await chmod(join(dir, "apt-get"), 0o755);
const env = { ...process.env, PATH: `${dir}:${process.env.PATH}` };
const asRoot = process.getuid?.() === 0;

t.test("isInstalled", async (t) => {
  t.ok(isInstalled("sh"), "a command on PATH");
  t.notOk(isInstalled("tether-no-such-command"), "a command that is nowhere");
  t.notOk(isInstalled(join(dir, "absent")), "an absent path");
});

t.test("a present package runs no apt-get", async (t) => {
  ensureDebianPackage({ name: "sh", provides: "sh", neededBy: "this test" });
  t.equal(await readFile(calls, "utf8").catch(() => ""), "", "apt-get was not called");
});

t.test("two processes at once install once", { skip: asRoot ? false : "needs root" }, async (t) => {
  const script = `import { ensureDebianPackage } from ${JSON.stringify(new URL("./debian-package.ts", import.meta.url).href)};
ensureDebianPackage({ name: "fake", provides: ${JSON.stringify(installed)}, neededBy: "this test" });`;
  const child = () => run(process.execPath, ["--import=tsx", "--input-type=module", "-e", script], { env });
  await Promise.all([child(), child(), child()]);
  const lines = (await readFile(calls, "utf8")).trim().split("\n");
  t.same(lines, ["install -y -qq --no-install-recommends fake"], "one install, no update");
  t.ok(isInstalled(installed));
});

t.test("a failed install names the command to run", { skip: asRoot ? false : "needs root" }, async (t) => {
  const script = `import { ensureDebianPackage } from ${JSON.stringify(new URL("./debian-package.ts", import.meta.url).href)};
ensureDebianPackage({ name: "broken", provides: ${JSON.stringify(join(dir, "never"))}, neededBy: "the broken tests" });`;
  const failed = await run(process.execPath, ["--import=tsx", "--input-type=module", "-e", script], {
    env,
  }).then(
    () => undefined,
    (err: { stderr: string }) => err.stderr,
  );
  t.match(failed, /the broken tests need .*never: apt-get install -y broken/);
  const lines = (await readFile(calls, "utf8")).trim().split("\n").slice(1);
  t.same(
    lines,
    [
      "install -y -qq --no-install-recommends broken",
      "update -qq",
      "install -y -qq --no-install-recommends broken",
    ],
    "a failed install updates the lists and tries once more",
  );
});
