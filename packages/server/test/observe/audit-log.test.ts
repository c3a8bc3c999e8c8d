// The audit log's lines (through a real HTTP server: headers, bodies and the
// close of the response are Node's own) and its file: created 0600, a wider
// existing mode narrowed, reopened at its path after a rename, and bounded
// when the destination stops reading — lines are dropped and counted, never
// torn, and never held without limit.
import { execFileSync } from "node:child_process";
import { constants, openSync } from "node:fs";
import { chmod, mkdtemp, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { createServer, request } from "node:http";
import { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { sendStatus } from "@tether/common";
import t from "tap";
import { createLogger } from "../../src/logger.js";
import { AuditFile, type AuditSink } from "../../src/observe/audit-file.js";
import { AuditLog, REQUEST_ID_HEADER } from "../../src/observe/audit-log.js";

const dir = await mkdtemp(join(tmpdir(), "tether-audit-"));
t.teardown(() => rm(dir, { recursive: true, force: true }));

class Memory implements AuditSink {
  lines: string[] = [];
  write(line: string) {
    this.lines.push(line);
  }
  reopen() {}
  async close() {}
  get events(): Record<string, unknown>[] {
    return this.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  }
}

/** A logger whose lines the test reads. */
function capturedLogger() {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger({ level: "debug" }, {
    write: (s: string) => lines.push(JSON.parse(s) as Record<string, unknown>),
  } as unknown as NodeJS.WritableStream);
  return { log, lines };
}

const RFC3339_MS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

const memory = new Memory();
const audit = new AuditLog(memory);
const alice = { user: "alice", groups: ["admins", "devs"], via: "token" as const, clusters: ["member1"] };

// Plays the cluster proxy: refuses /refuse, admits the rest and answers with a body of its own.
const server = createServer((req, res) => {
  if (req.url?.startsWith("/admin/")) {
    audit.endpoint(req, res, "admin");
    audit.note(req, { subjectUser: "bob" });
    res.writeHead(201).end("{}");
    return;
  }
  const record = audit.request(req, res);
  if (req.url?.includes("/refuse")) {
    record.refused("Forbidden", `user "alice" may not use cluster "member1" through Tether`, alice);
    sendStatus(res, "Forbidden", "no");
    return;
  }
  if (req.url?.includes("BAD")) {
    record.refused("NotFound", "not a valid cluster name");
    sendStatus(res, "NotFound", "no");
    return;
  }
  if (req.url?.includes("/passthrough/")) record.admitted("member2", "passthrough", undefined);
  else record.admitted("member1", "impersonate", alice);
  req.url = "/rewritten-by-the-proxy";
  const body: Buffer[] = [];
  req.on("data", (c: Buffer) => body.push(c));
  req.on("end", () => {
    const answer = Readable.from([Buffer.from("x".repeat(1000)), Buffer.from("y".repeat(234))]);
    audit.response(req, 201, answer);
    res.writeHead(201);
    answer.pipe(res);
  });
});
await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
t.teardown(() => server.close());
const port = (server.address() as { port: number }).port;

function call(
  method: string,
  path: string,
  body?: string,
  userAgent = "kubectl/test",
): Promise<{ status: number; id: string | undefined; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        port,
        host: "127.0.0.1",
        method,
        path,
        headers: { "user-agent": userAgent, authorization: "Bearer tether_SECRET_IN_HEADER" },
      },
      (res) => {
        let text = "";
        res.on("data", (c: Buffer) => (text += c));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            id: res.headers[REQUEST_ID_HEADER.toLowerCase()] as string,
            text,
          }),
        );
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

/** The line of the request whose id the response carried (written when its response closes). */
async function lineOf(id: string | undefined): Promise<Record<string, unknown>> {
  for (let i = 0; i < 100; i++) {
    const found = memory.events.find((e) => e.requestId === id);
    if (found) return found;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`no audit line with requestId ${id}`);
}

t.test("a forwarded request: one line with who, what, code, bytes and duration", async (t) => {
  const r = await call(
    "POST",
    "/clusters/member1/api/v1/namespaces/default/configmaps?fieldManager=kubectl&token=SECRET_IN_QUERY",
    "hello world",
  );
  t.equal(r.status, 201);
  t.match(r.id, UUID, `${REQUEST_ID_HEADER} is sent back`);
  const line = await lineOf(r.id);
  t.match(line.time, RFC3339_MS);
  t.same(
    Object.keys(line).slice(0, 4),
    ["time", "kind", "stage", "requestId"],
    "the line starts with when and what",
  );
  t.match(line, {
    kind: "request",
    stage: "complete",
    cluster: "member1",
    auth: "token",
    user: "alice",
    groups: ["admins", "devs"],
    sourceAddress: "127.0.0.1",
    userAgent: "kubectl/test",
    verb: "create",
    apiGroup: "",
    apiVersion: "v1",
    resource: "configmaps",
    subresource: "",
    namespace: "default",
    name: "",
    path: "/api/v1/namespaces/default/configmaps",
    code: 201,
    bytesIn: 11,
    bytesOut: 1234,
  });
  t.type(line.durationMs, "number");
  t.ok((line.durationMs as number) >= 0);
  t.notOk("complete" in line, "a finished response is not marked");
  const text = memory.lines.find((l) => l.includes(r.id!))!;
  t.notMatch(text, /SECRET/, "neither the query nor the Authorization header is copied");
  t.ok(text.endsWith("}\n") && !text.slice(0, -1).includes("\n"), "one line");
});

t.test("passthrough: the mode, and no user (the member judges the credential)", async (t) => {
  const r = await call("GET", "/clusters/member2/passthrough/api/v1/nodes");
  const line = await lineOf(r.id);
  t.match(line, { stage: "complete", cluster: "member2", auth: "passthrough", code: 201 });
  t.notOk("user" in line || "groups" in line, "no user or groups");
  t.notMatch(JSON.stringify(line), /SECRET/, "and not the credential");
});

t.test("a refused request: the code, the reason, and the caller when known", async (t) => {
  const r = await call("GET", "/clusters/member1/api/v1/namespaces/kube-system/secrets/refuse");
  t.equal(r.status, 403);
  const line = await lineOf(r.id);
  t.match(line, {
    kind: "request",
    stage: "refused",
    cluster: "member1",
    auth: "token",
    user: "alice",
    verb: "get",
    resource: "secrets",
    namespace: "kube-system",
    name: "refuse",
    code: 403,
    reason: "Forbidden",
    message: /may not use cluster/,
    bytesIn: 0,
    bytesOut: Buffer.byteLength(r.text),
  });

  const long = await call("GET", `/clusters/member1/refuse/${"p".repeat(5000)}`, undefined, "u".repeat(5000));
  const longLine = await lineOf(long.id);
  t.ok((longLine.path as string).length <= 257, "a long path is cut");
  t.ok((longLine.userAgent as string).length <= 257, "a long user agent is cut");

  const bad = await call("GET", "/clusters/BAD!tether_pasted_here/api");
  const badLine = await lineOf(bad.id);
  t.match(badLine, { stage: "refused", code: 404, auth: "none", reason: "NotFound" });
  t.notOk("cluster" in badLine, "a name that is no cluster name is not recorded as one");
  t.notOk("user" in badLine);
  t.notOk("message" in badLine, "nor the message that quotes it");
});

t.test("an admin API call: its action, cluster and notes", async (t) => {
  const r = await call("POST", "/admin/v1/clusters/member1/user-tokens", '{"user":"bob","ttlMs":1}');
  const line = await lineOf(r.id);
  t.match(line, {
    kind: "admin",
    stage: "complete",
    action: "user-token.create",
    cluster: "member1",
    subjectUser: "bob",
    method: "POST",
    path: "/admin/v1/clusters/member1/user-tokens",
    code: 201,
  });
  const list = await lineOf((await call("GET", "/admin/v1/clusters")).id);
  t.match(list, { action: "cluster.list" });
  t.notOk("cluster" in list);
  const remove = await lineOf((await call("DELETE", "/admin/v1/clusters/gone")).id);
  t.match(remove, { action: "cluster.remove", cluster: "gone" });
  const revoke = await lineOf((await call("POST", "/admin/v1/token-revocations", '{"user":"bob"}')).id);
  t.match(revoke, { action: "token.revoke" }, "a revocation is audited as one");
  t.match(await lineOf((await call("GET", "/admin/v1/tokens")).id), { action: "token.list" });
  const odd = await lineOf((await call("PUT", "/admin/v1/whatever/x/y/z")).id);
  t.match(odd, { action: "unknown" });
  t.match(await lineOf((await call("GET", "/admin/v1/whatever")).id), { action: "unknown" });
});

t.test("an agent's tunnel", async (t) => {
  audit.agent("connected", {
    cluster: "member1",
    remoteAddress: "10.0.0.1",
    serial: "ab",
    agentVersion: "0.1.0",
  });
  t.match(memory.events.at(-1), {
    kind: "agent",
    stage: "connected",
    cluster: "member1",
    serial: "ab",
    sourceAddress: "10.0.0.1",
    agentVersion: "0.1.0",
  });
  audit.agent("refused", { remoteAddress: "10.0.0.2", message: "x".repeat(1000) });
  const refused = memory.events.at(-1)!;
  t.match(refused, { kind: "agent", stage: "refused", sourceAddress: "10.0.0.2" });
  t.ok((refused.message as string).length <= 257, "the message is cut");
});

t.test("a renewal", async (t) => {
  audit.renewal({ cluster: "member1", remoteAddress: "10.0.0.1" }, "refused", { message: "too young" });
  t.match(memory.events.at(-1), {
    kind: "renewal",
    stage: "complete",
    outcome: "refused",
    cluster: "member1",
    sourceAddress: "10.0.0.1",
    message: "too young",
  });
});

t.test("the file: created 0600, a wider mode narrowed, reopened after a rename", async (t) => {
  const { log, lines: logLines } = capturedLogger();
  const path = join(dir, "audit.log");
  const file = await AuditFile.open({ target: path, log });
  const fileAudit = new AuditLog(file);
  fileAudit.write({ kind: "test", n: 1 });
  await new Promise((r) => setTimeout(r, 50));
  t.equal((await stat(path)).mode & 0o777, 0o600, "created with mode 0600");

  await rename(path, `${path}.1`);
  fileAudit.write({ kind: "test", n: 2 }); // still the renamed file: not reopened yet
  // logrotate's "create 0644": the new file is wider than it should be.
  await writeFile(path, "");
  await chmod(path, 0o644);
  fileAudit.reopen();
  fileAudit.write({ kind: "test", n: 3 });
  await file.close();
  const n = async (p: string) =>
    (await readFile(p, "utf8"))
      .trimEnd()
      .split("\n")
      .map((l) => (JSON.parse(l) as { n: number }).n);
  t.same(await n(`${path}.1`), [1, 2], "lines before the reopen went to the moved file");
  t.same(await n(path), [3], "lines after it to the new file at the path");
  t.equal((await stat(path)).mode & 0o777, 0o600, "the wider mode was narrowed");
  t.ok(
    logLines.some((l) => /now 0600/.test(String(l.msg)) && l.mode === "644"),
    "and the log says so",
  );
});

t.test("a file that cannot be opened is a coded error", async (t) => {
  const { log } = capturedLogger();
  await t.rejects(AuditFile.open({ target: join(dir, "no-such-dir", "audit.log"), log }), {
    code: "ERR_TETHER_AUDIT_LOG",
  });
  await t.rejects(AuditFile.open({ target: dir, log }), { code: "ERR_TETHER_AUDIT_LOG" }, "a directory");
});

t.test("a destination that stops reading: bounded, dropped lines counted, none torn", async (t) => {
  const fifo = join(dir, "slow.fifo");
  execFileSync("mkfifo", [fifo]);
  // A reader that exists (so the writer can open) but reads nothing until told.
  const reader = new Socket({
    fd: openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK),
    readable: true,
    writable: false,
  });
  reader.pause();
  const { log, lines: logLines } = capturedLogger();
  const maxBufferBytes = 64 * 1024;
  const file = await AuditFile.open({ target: fifo, log, maxBufferBytes, warningIntervalMs: 50 });
  const slowAudit = new AuditLog(file);
  const total = 5000;
  const padding = "p".repeat(150);
  for (let i = 0; i < total; i++) slowAudit.write({ kind: "test", i, padding });
  // Every write returned at once: the loop above did not wait for the reader.
  const warned = async () => logLines.find((l) => typeof l.dropped === "number");
  for (let i = 0; i < 200 && !(await warned()); i++) await new Promise((r) => setTimeout(r, 20));
  const warning = await warned();
  t.ok(warning, "a warning counts the dropped lines");
  const dropped = logLines.reduce((n, l) => n + (typeof l.dropped === "number" ? l.dropped : 0), 0);
  t.ok(dropped > 0, `${dropped} of ${total} lines dropped`);
  // At most the pipe's buffer and the bound were taken: the rest was dropped, not queued.
  const lineBytes = Buffer.byteLength(
    `${JSON.stringify({ time: new Date().toISOString(), kind: "test", i: 1000, padding })}\n`,
  );
  t.ok(
    (total - dropped) * lineBytes < maxBufferBytes + 1024 * 1024 + lineBytes * 2,
    "held lines are bounded",
  );

  let received = "";
  reader.setEncoding("utf8");
  reader.on("data", (c: string) => (received += c));
  const ended = new Promise((r) => reader.once("end", r));
  reader.resume();
  await file.close();
  await ended;
  const lines = received.split("\n");
  t.equal(lines.pop(), "", "the stream ends with a whole line");
  t.equal(lines.length + dropped, total, "every line was written or counted as dropped");
  const numbers = lines.map((l) => (JSON.parse(l) as { i: number }).i);
  t.ok(
    numbers.every((n, k) => k === 0 || n > numbers[k - 1]!),
    "each line whole and in order",
  );
});
