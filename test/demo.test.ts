// `npm run demo -- --once` as a newcomer runs it (install and build steps
// aside: npm test has done those): every check passes, it exits 0, and it
// leaves no temporary directory behind.
import { execFile } from "node:child_process";
import { readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { promisify } from "node:util";
import t from "tap";

const root = new URL("..", import.meta.url).pathname;
const run = promisify(execFile);

t.test("demo --once joins two members and runs kubectl through Tether", async (t) => {
  const before = new Set((await readdir(tmpdir())).filter((d) => d.startsWith("tether-demo-")));
  const { stdout } = await run(
    `${root}node_modules/.bin/tsx`,
    ["--conditions=tether-source", "scripts/demo.ts", "--once"],
    { cwd: root, timeout: 180_000 },
  );
  for (const member of ["m1", "m2"]) {
    t.match(stdout, new RegExp(`ok +${member} joined`), `${member} joined through the join flow`);
    t.match(stdout, new RegExp(`ok +${member}: kubectl get namespaces: .*namespace/kube-system`));
    t.match(
      stdout,
      new RegExp(`ok +${member}: kubectl get configmaps --watch sees a new ConfigMap: configmap/demo-`),
    );
    t.match(stdout, new RegExp(`ok +${member}: kubectl exec: "hello from ${member}"`));
  }
  t.notMatch(stdout, /FAIL/);
  t.match(stdout, /All checks passed/);
  const left = (await readdir(tmpdir())).filter((d) => d.startsWith("tether-demo-") && !before.has(d));
  t.same(left, [], "its temporary directory is removed");
});
