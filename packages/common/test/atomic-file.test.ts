// writeFileAtomic / removeStaleTempFiles.
import { spawnSync } from "node:child_process";
import { mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import t from "tap";
import { removeStaleTempFiles, writeFileAtomic } from "../src/atomic-file.js";

t.test("writes, replaces, and applies the mode exactly (not filtered by the umask)", async (t) => {
  const dir = t.testdir();
  const p = join(dir, "a.json");
  const old = process.umask(0o077);
  try {
    await writeFileAtomic(p, "one");
    t.equal(await readFile(p, "utf8"), "one");
    t.equal((await stat(p)).mode & 0o777, 0o600, "default 0600");
    await writeFileAtomic(p, Buffer.from("two"), 0o644);
    t.equal(await readFile(p, "utf8"), "two");
    t.equal((await stat(p)).mode & 0o777, 0o644, "0644 despite umask 077");
  } finally {
    process.umask(old);
  }
  t.same(await readdir(dir), ["a.json"], "no temp files left");
});

t.test("concurrent writers: the file always holds one complete version", async (t) => {
  const dir = t.testdir();
  const p = join(dir, "c.json");
  const versions = Array.from({ length: 20 }, (_, i) => JSON.stringify({ i, pad: "x".repeat(10_000 + i) }));
  await Promise.all(versions.map((v) => writeFileAtomic(p, v)));
  t.ok(versions.includes(await readFile(p, "utf8")));
  t.same(await readdir(dir), ["c.json"]);
});

t.test("on failure the target is untouched and the temp file removed", async (t) => {
  const dir = t.testdir({ target: { child: "x" } });
  const p = join(dir, "target"); // a non-empty directory: rename over it fails
  await t.rejects(writeFileAtomic(p, "data"), { code: /^E[A-Z]+$/ });
  t.same((await readdir(dir)).sort(), ["target"]);
  t.equal(await readFile(join(p, "child"), "utf8"), "x");
  await t.rejects(writeFileAtomic(join(dir, "missing-dir", "f"), "data"), { code: "ENOENT" });
});

t.test("removeStaleTempFiles removes dead writers' temp files only", async (t) => {
  const dir = t.testdir();
  const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], {
    encoding: "utf8",
  }).stdout;
  await mkdir(dir, { recursive: true });
  const deadTmp = `.clusters.json.${dead}.0123456789abcdef.tmp`;
  const liveTmp = `.clusters.json.${process.pid}.0123456789abcdef.tmp`;
  await writeFile(join(dir, deadTmp), "partial");
  await writeFile(join(dir, liveTmp), "in flight");
  await writeFile(join(dir, "clusters.json"), "{}");
  await writeFile(join(dir, ".other.tmp"), "not ours");
  t.equal(await removeStaleTempFiles(dir), 1);
  t.same(
    (await readdir(dir)).sort(),
    [".clusters.json." + process.pid + ".0123456789abcdef.tmp", ".other.tmp", "clusters.json"].sort(),
  );
});
