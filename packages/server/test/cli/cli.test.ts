// The tether-server bin as installed: --version and --help work, a bad flag
// gets a clear error and a non-zero exit, not a stack trace, and `serve`
// writes the admin credential the admin commands' remote mode uses.
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { stat } from "node:fs/promises";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";

const bin = new URL("../../bin/tether-server.js", import.meta.url).pathname;
const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8"));
const run = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: "utf8" });

t.test("--version prints the package version", async (t) => {
  const r = run("--version");
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout.trim(), pkg.version);
});

t.test("--help describes the command", async (t) => {
  const r = run("--help");
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /Usage: tether-server/);
  t.match(r.stdout, /--version/);
});

t.test("an unknown flag is refused with a usable message", async (t) => {
  const r = run("--no-such-flag");
  t.not(r.status, 0);
  t.match(r.stderr, /unknown option '--no-such-flag'/);
  t.notMatch(r.stderr, / {4}at /, "no stack trace");
});

t.test("every error is one line 'tether-server: …' and exit code 1", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "tether-cli-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const args of [
    ["--no-such-flag"],
    ["cluster", "bogus"],
    ["cluster", "add"],
    ["cluster", "add", "Bad_Name", "--state-dir", dir, "--server", "https://h:1"],
    ["cluster", "add", "ok", "--state-dir", dir],
    ["kubeconfig", "nope", "--state-dir", dir, "--server", "https://h:1", "--user", "a"],
    ["kubeconfig", "nope", "--state-dir", dir, "--server", "https://h:1", "--user", "a", "--ttl", "9y"],
  ]) {
    const r = run(...args);
    t.equal(r.status, 1, `${args.join(" ")}: exit 1`);
    t.match(r.stderr, /^tether-server: [^\n]+\n$/, `${args.join(" ")}: one line`);
    t.equal(r.stdout, "");
  }
  t.match(run("cluster", "add", "ok", "--state-dir", dir).stderr, /no server URL: pass --server/);
});

t.test("serve --drain-timeout takes a duration longer than 0", async (t) => {
  for (const bad of ["0s", "soon"]) {
    const r = run("serve", "--drain-timeout", bad);
    t.equal(r.status, 1, `--drain-timeout ${bad}`);
    t.match(r.stderr, /^tether-server: .*--drain-timeout <duration>.* must be a duration longer than 0/);
  }
  t.match(run("serve", "--help").stdout, /--drain-timeout <duration>.*\(default: 30s\)/s);
});

t.test("the bin runs the admin commands", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "tether-cli-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const add = run("cluster", "add", "c1", "--state-dir", dir, "--server", "https://h:8443", "-o", "json");
  t.equal(add.status, 0, add.stderr);
  t.match(JSON.parse(add.stdout), { name: "c1", server: "https://h:8443", token: /^tether_/ });
  const list = run("cluster", "list", "--state-dir", dir, "-o", "json");
  t.equal(list.status, 0, list.stderr);
  t.same(
    JSON.parse(list.stdout).clusters.map((c: { name: string }) => c.name),
    ["c1"],
  );
  const help = run("--help");
  for (const cmd of ["serve", "cluster", "join-token", "kubeconfig"]) t.match(help.stdout, cmd);
});

t.test("serve writes an admin credential (0600) that the admin commands use with --credential", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "tether-cli-serve-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // A fixed port, so that a restart serves at the same URL.
  const port = await freePort();
  const serve = () => {
    const child = spawn(
      process.execPath,
      [bin, "serve", "--state-dir", dir, "--listen", `127.0.0.1:${port}`],
      {
        stdio: "ignore",
      },
    );
    t.teardown(() => child.kill("SIGKILL"));
    return child;
  };
  const server = serve();
  const file = join(dir, "admin-credential.json");
  for (let i = 0; i < 300; i++) {
    if (await stat(file).catch(() => undefined)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  t.equal((await stat(file)).mode & 0o777, 0o600, "written 0600");
  const other = mkdtempSync(join(tmpdir(), "tether-cli-other-"));
  t.teardown(() => rmSync(other, { recursive: true, force: true }));
  // An empty state dir elsewhere: the command can only succeed through the server.
  const add = spawnSync(
    process.execPath,
    [bin, "cluster", "add", "remote-1", "--credential", file, "--state-dir", other, "-o", "json"],
    { encoding: "utf8" },
  );
  t.equal(add.status, 0, add.stderr);
  const list = run("cluster", "list", "--state-dir", dir, "-o", "json");
  t.match(JSON.parse(list.stdout), { clusters: [{ name: "remote-1" }] }, "the server's state has it");

  const written = readFileSync(file, "utf8");
  server.kill("SIGKILL");
  await once(server, "exit");
  serve();
  let remoteList = run("cluster", "list", "--credential", file, "--state-dir", other, "-o", "json");
  for (let i = 0; i < 300 && remoteList.status !== 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
    remoteList = run("cluster", "list", "--credential", file, "--state-dir", other, "-o", "json");
  }
  t.equal(remoteList.status, 0, `the credential works after a restart: ${remoteList.stderr}`);
  t.match(JSON.parse(remoteList.stdout), { clusters: [{ name: "remote-1" }] });
  t.equal(readFileSync(file, "utf8"), written, "and the restarted server left it as it was");
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

t.test("the bin prints a coded error as 'tether-server: CODE: message'", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "tether-cli-code-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const bad = run("cluster", "add", "Bad_Name", "--state-dir", dir, "--server", "https://h:1");
  t.equal(bad.status, 1);
  t.match(
    bad.stderr,
    /^tether-server: ERR_TETHER_INVALID_CLUSTER_NAME: invalid cluster name "Bad_Name"[^\n]*\n$/,
  );
  const noUrl = run("cluster", "add", "ok", "--state-dir", dir);
  t.match(noUrl.stderr, /^tether-server: ERR_TETHER_NO_SERVER_URL: no server URL: pass --server/);
});
