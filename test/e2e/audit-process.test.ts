// The audit log flags on a tether-server process: a file that exists with a
// wider mode is narrowed to 0600; SIGHUP reopens the path, so after logrotate
// moved the file new lines go to a new one; `--audit-log -` puts audit lines
// alone on stdout and the log on stderr; bad flag combinations and an
// unopenable path are coded errors before anything starts.
import { chmod, mkdtemp, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger, FileStore, runCliCaptured } from "@tether/server";
import t from "tap";
import { openAuditLog } from "../../packages/server/src/cli/audit-options.js";
import { freePort } from "../kube/index.js";
import { ManagedProcess } from "../kube/processes.js";
import { until } from "./fixture.js";
import { rawRequest } from "./raw-client.js";
import { SERVER_BIN, signal, spawnServer } from "./tether-processes.js";

type Line = Record<string, unknown>;

const dir = await mkdtemp(join(tmpdir(), "tether-audit-process-"));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const stateDir = join(dir, "state");
const caPem = (await (await FileStore.open(stateDir)).loadOrCreateCa()).certPem;
const SECRET = `tether_${"S".repeat(43)}`;

const parse = (text: string): Line[] =>
  text
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as Line);
const lines = async (path: string): Promise<Line[]> => parse(await readFile(path, "utf8").catch(() => ""));

/** A refused request with a credential: audited with a request id, and the credential nowhere. */
async function refused(url: string): Promise<string> {
  const r = await rawRequest({ url, caPem }, "/clusters/nope/api/v1/pods?watch=1&token=x", {
    headers: { authorization: `Bearer ${SECRET}` },
  });
  if (r.status !== 404) throw new Error(`expected 404, got ${r.status}`);
  return r.headers["x-tether-request-id"]!;
}

t.test("0600, and SIGHUP reopens the file at its path", async (t) => {
  const auditPath = join(dir, "audit.log");
  await writeFile(auditPath, "");
  await chmod(auditPath, 0o644);
  const serverLog = join(dir, "server.log");
  const { proc, url } = await spawnServer(stateDir, caPem, serverLog, undefined, ["--audit-log", auditPath]);
  t.teardown(() => proc.stop());
  await until("the mode narrowed", async () => ((await stat(auditPath)).mode & 0o777) === 0o600);
  t.match(await readFile(serverLog, "utf8"), /its mode is now 0600/, "the log says so");

  const first = await refused(url);
  await until("the first line", async () => (await lines(auditPath)).some((l) => l.requestId === first));
  await rename(auditPath, `${auditPath}.1`);
  signal(proc, "SIGHUP");
  // Lines go to the moved file until the reopen is done: wait until one reaches the new file.
  let second = "";
  await until("a line in the new file", async () => {
    second = await refused(url);
    return (await lines(auditPath)).some((l) => l.requestId === second);
  });
  const moved = await lines(`${auditPath}.1`);
  t.ok(
    moved.some((l) => l.requestId === first),
    "the first line stayed in the moved file",
  );
  t.notOk(
    moved.some((l) => l.requestId === second),
    "the line after the reopen is not in the moved file",
  );
  t.equal((await stat(auditPath)).mode & 0o777, 0o600, "the new file is 0600");
  t.match(
    (await lines(auditPath)).find((l) => l.requestId === second),
    {
      kind: "request",
      stage: "refused",
      code: 404,
      reason: "NotFound",
      auth: "none",
      cluster: "nope",
      verb: "watch",
      resource: "pods",
    },
  );
  const upgrade = await rawRequest({ url, caPem }, "/clusters/nope/api/v1/namespaces/default/pods/box/exec", {
    headers: { connection: "Upgrade", upgrade: "websocket", authorization: `Bearer ${SECRET}` },
  });
  t.equal(upgrade.status, 404);
  const upgradeId = upgrade.headers["x-tether-request-id"];
  t.match(upgradeId, /^[0-9a-f-]{36}$/, "a refused upgrade carries the request id too");
  await until("the refused upgrade's line", async () =>
    (await lines(auditPath)).some((l) => l.requestId === upgradeId),
  );
  t.match(
    (await lines(auditPath)).find((l) => l.requestId === upgradeId),
    {
      kind: "upgrade",
      stage: "refused",
      code: 404,
      verb: "get",
      resource: "pods",
      subresource: "exec",
      name: "box",
    },
  );
  for (const file of [auditPath, `${auditPath}.1`, serverLog]) {
    t.notOk((await readFile(file, "utf8")).includes(SECRET), `the credential is not in ${file}`);
  }
});

t.test("--audit-log -: audit lines alone on stdout, the log on stderr", async (t) => {
  const port = await freePort();
  const url = `https://127.0.0.1:${port}`;
  const out = join(dir, "stdout");
  const err = join(dir, "stderr");
  const ca = (await (await FileStore.open(join(dir, "state-stdout"))).loadOrCreateCa()).certPem;
  const proc = new ManagedProcess(
    "tether-server",
    "sh",
    [
      "-c",
      `exec "$0" "$@" 2>"${err}"`,
      process.execPath,
      SERVER_BIN,
      "serve",
      "--state-dir",
      join(dir, "state-stdout"),
      "--listen",
      `127.0.0.1:${port}`,
      "--audit-log",
      "-",
    ],
    out,
  );
  t.teardown(() => proc.stop());
  await until("ready", async () => {
    proc.assertRunning();
    return (await rawRequest({ url, caPem: ca }, "/readyz").catch(() => ({ status: 0 }))).status === 200;
  });
  const id = (
    await rawRequest({ url, caPem: ca }, "/clusters/nope/api", {
      headers: { authorization: `Bearer ${SECRET}` },
    })
  ).headers["x-tether-request-id"];
  await until("the line on stdout", async () => (await lines(out)).some((l) => l.requestId === id));
  const stdout = await lines(out);
  t.ok(
    stdout.every((l) => typeof l.kind === "string" && typeof l.requestId === "string" && !("level" in l)),
    `stdout holds ${stdout.length} audit line(s) and nothing else`,
  );
  const stderr = await lines(err);
  t.ok(
    stderr.some((l) => l.msg === "tether-server listening"),
    "the log is on stderr",
  );
  t.ok(
    stderr.every((l) => "level" in l && !("requestId" in l)),
    "and holds no audit line",
  );
});

t.test("bad combinations are coded errors before anything starts", async (t) => {
  const state = join(dir, "state-bad");
  const noLog = await runCliCaptured(["serve", "--state-dir", state, "--audit-level", "metadata"]);
  t.equal(noLog.code, 1);
  t.match(noLog.stderr, /ERR_TETHER_AUDIT_LOG: --audit-level metadata needs --audit-log/);
  const unopenable = await runCliCaptured([
    "serve",
    "--state-dir",
    state,
    "--audit-log",
    join(dir, "no", "x"),
  ]);
  t.equal(unopenable.code, 1);
  t.match(unopenable.stderr, /ERR_TETHER_AUDIT_LOG: cannot open the audit log/);
  const badLevel = await runCliCaptured(["serve", "--state-dir", state, "--audit-level", "request"]);
  t.equal(badLevel.code, 1);
  t.match(badLevel.stderr, /--audit-level.*none, metadata/);
  await t.rejects(stat(join(state, "ca.crt")), "no state was created");
  const none = join(dir, "not-written.log");
  t.equal(await openAuditLog({ auditLog: none, auditLevel: "none" }, createLogger()), undefined);
  await t.rejects(stat(none), "--audit-level none opens nothing");
});
