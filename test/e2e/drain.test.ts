// Issue 14, drain: SIGTERM to a real `tether-server serve` process while a
// large LIST is being read, and while a JSON and a protobuf watch stream
// their initial events. The LIST completes, both watches end with a whole
// chunked response made of whole events, a new connection is refused, the
// agent hears the go-away before the socket closes, and the process exits 0.
// A request still held when the grace period ends is cut and the process
// exits anyway. With --shutdown-delay the member is still served on new
// connections, readiness false, until the listener closes.
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { request as httpsRequest } from "node:https";
import type { IncomingMessage } from "node:http";
import { tmpdir } from "node:os";
import { connect as tlsConnect } from "node:tls";
import { join } from "node:path";
import { FileStore, issueToken } from "@tether/server";
import t from "tap";
import { freePort, startClusters } from "../kube/index.js";
import { ManagedProcess } from "../kube/processes.js";
import { bindTetherAdmins, prepareMember, until } from "./fixture.js";
import { FAST_TIMING, SERVER_BIN, signal, spawnAgent } from "./tether-processes.js";

const set = await startClusters(1);
t.teardown(() => set.stop());
const member = set.clusters[0]!;
const dir = await mkdtemp(join(tmpdir(), "tether-drain-"));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const stateDir = join(dir, "state");
const store = await FileStore.open(stateDir);
const ca = await store.loadOrCreateCa();
await store.putCluster({
  name: "m1",
  auth: "impersonate",
  labels: {},
  allowedUsers: [],
  allowedGroups: [],
  createdAt: new Date().toISOString(),
});
const uid = (await store.getCluster("m1"))?.uid;
const cert = await ca.issueClusterCertificate("m1", uid ? { incarnation: uid } : {});
await store.recordIssued(cert.serial, "m1", cert.notAfter.toISOString());
const { token, hash } = issueToken();
await store.addToken({
  hash,
  kind: "user",
  user: "alice",
  groups: ["admins"],
  clusters: ["m1"],
  expiresAt: new Date(Date.now() + 3600_000).toISOString(),
});
const files = {
  caFile: join(dir, "agent-ca.crt"),
  certFile: join(dir, "agent.crt"),
  keyFile: join(dir, "agent.key"),
};
await writeFile(files.caFile, ca.certPem);
await writeFile(files.certFile, cert.certPem);
await writeFile(files.keyFile, cert.keyPem!, { mode: 0o600 });
await bindTetherAdmins(member);
const saDir = join(dir, "sa");
const env = await prepareMember(member, saDir);

// 120 ConfigMaps of 200 KB: a 24 MB LIST and as many bytes of initial watch events.
const COUNT = 120;
await member.api("POST", "/api/v1/namespaces", { metadata: { name: "drain" } }, [409]);
const filler = "x".repeat(200_000);
for (let i = 0; i < COUNT; i += 10) {
  await Promise.all(
    Array.from({ length: Math.min(10, COUNT - i) }, (_, j) =>
      member.api(
        "POST",
        "/api/v1/namespaces/drain/configmaps",
        { metadata: { name: `big-${i + j}` }, data: { filler } },
        [409],
      ),
    ),
  );
}

const port = await freePort();
const url = `https://127.0.0.1:${port}`;
const agent = spawnAgent({
  server: url,
  ...files,
  env,
  serviceAccountDir: saDir,
  logFile: join(dir, "agent.log"),
});
t.teardown(() => agent.stop());

interface Started {
  res: IncomingMessage;
  /** Everything read so far. */
  chunks: Buffer[];
  /** Resolves with whether the response ended whole (the chunked terminator arrived). */
  ended: Promise<boolean>;
}

/** A GET through the tunnel; the body is read only while `reading`. */
function get(path: string, accept = "application/json", reading = true): Promise<Started> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      `${url}/clusters/m1${path}`,
      { ca: ca.certPem, agent: false, headers: { authorization: `Bearer ${token}`, accept } },
      (res) => {
        const chunks: Buffer[] = [];
        const ended = new Promise<boolean>((done) => {
          res.on("data", (c: Buffer) => chunks.push(c));
          res.once("end", () => done(res.complete));
          res.once("aborted", () => done(false));
          res.once("error", () => done(false));
          res.once("close", () => done(res.complete));
        });
        if (!reading) res.pause();
        resolve({ res, chunks, ended });
      },
    );
    req.once("error", reject);
    req.end();
  });
}

/** `delay`: --shutdown-delay; 0 closes the listener at once, as the tests of the drain itself want. */
async function startServer(log: string, grace: string, delay = "0"): Promise<ManagedProcess> {
  const proc = new ManagedProcess(
    "tether-server",
    process.execPath,
    [
      SERVER_BIN,
      "serve",
      "--state-dir",
      stateDir,
      "--listen",
      `127.0.0.1:${port}`,
      "--keepalive",
      String(FAST_TIMING.keepaliveSeconds),
      "--dead-peer-timeout",
      String(FAST_TIMING.deadPeerTimeoutSeconds),
      "--shutdown-grace",
      grace,
      "--shutdown-delay",
      delay,
    ],
    join(dir, log),
  );
  await until("the member answers through the server", async () => {
    proc.assertRunning();
    return (
      (await get("/api")
        .then((s) => s.ended.then(() => s.res.statusCode))
        .catch(() => 0)) === 200
    );
  });
  return proc;
}

/** Whether a new connection is refused (the listener closed). */
function connectionRefused(): Promise<boolean> {
  return get("/api").then(
    () => false,
    (err: NodeJS.ErrnoException) => err.code === "ECONNREFUSED",
  );
}

function goAwaysHeard(): number {
  return readFileSync(join(dir, "agent.log"), "utf8")
    .split("\n")
    .filter((l) => /go-away/.test(l)).length;
}

/** Splits protobuf watch frames (4-byte big-endian length, then the event); undefined if the bytes end mid-frame. */
function protobufFrames(body: Buffer): number | undefined {
  let at = 0;
  let frames = 0;
  while (at < body.length) {
    if (at + 4 > body.length) return undefined;
    at += 4 + body.readUInt32BE(at);
    frames++;
  }
  return at === body.length ? frames : undefined;
}

t.test("SIGTERM: the LIST completes, watches end between events, new connections are refused", async (t) => {
  const server = await startServer("server-1.log", "20s");
  const heardBefore = goAwaysHeard();
  const list = await get("/api/v1/namespaces/drain/configmaps", "application/json", false);
  const jsonWatch = await get("/api/v1/namespaces/drain/configmaps?watch=true", "application/json", false);
  const protoWatch = await get(
    "/api/v1/namespaces/drain/configmaps?watch=1",
    "application/vnd.kubernetes.protobuf;stream=watch",
    false,
  );
  // Something of each is under way, the rest held back by the unread sockets.
  for (const s of [list, jsonWatch, protoWatch]) s.res.once("readable", () => {});
  await new Promise((r) => setTimeout(r, 1_000));

  signal(server, "SIGTERM");
  await until("new connections are refused", connectionRefused);
  t.pass("a new connection during the drain is refused: a load balancer sends it to another replica");

  for (const s of [list, jsonWatch, protoWatch]) s.res.resume();
  t.equal(await jsonWatch.ended, true, "the JSON watch ended with the chunked terminator, not an abort");
  const lines = Buffer.concat(jsonWatch.chunks).toString("utf8").split("\n");
  t.equal(lines.pop(), "", "the JSON watch ends after a whole event");
  t.ok(lines.length >= 1, `the JSON watch carried ${lines.length} whole events`);
  t.ok(
    lines.every((l) => (JSON.parse(l) as { type?: string }).type === "ADDED"),
    "every JSON event parses",
  );
  t.equal(await protoWatch.ended, true, "the protobuf watch ended with the chunked terminator");
  const frames = protobufFrames(Buffer.concat(protoWatch.chunks));
  t.ok(frames !== undefined && frames >= 1, `the protobuf watch ends after a whole frame (${frames} frames)`);

  t.equal(await list.ended, true, "the LIST in flight completed");
  const items = (
    JSON.parse(Buffer.concat(list.chunks).toString("utf8")) as { items: { metadata: { name: string } }[] }
  ).items.filter((i) => i.metadata.name.startsWith("big-"));
  t.equal(items.length, COUNT, `the LIST has all ${COUNT} ConfigMaps`);

  await server.exited;
  t.equal(server.exitCode, 0, "the server exited 0 once nothing was in flight");
  t.ok(goAwaysHeard() > heardBefore, "the agent heard the go-away");
});

t.test("the go-away reaches the agent on every stop", async (t) => {
  for (let round = 0; round < 3; round++) {
    const server = await startServer(`server-round-${round}.log`, "20s");
    const heard = goAwaysHeard();
    signal(server, "SIGTERM");
    await server.exited;
    t.equal(server.exitCode, 0, `round ${round}: exit 0`);
    t.ok(goAwaysHeard() > heard, `round ${round}: the agent heard the go-away`);
  }
});

t.test("a request still held at the end of the grace period is cut, and the process exits", async (t) => {
  const server = await startServer("server-grace.log", "2s");
  // A caller that never reads: a TLS socket paused after the request, so the LIST backs up to the server.
  const socket = tlsConnect({ host: "127.0.0.1", port, ca: ca.certPem, servername: "localhost" });
  await new Promise<void>((resolve, reject) => socket.once("secureConnect", resolve).once("error", reject));
  socket.write(
    `GET /clusters/m1/api/v1/namespaces/drain/configmaps HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\n\r\n`,
  );
  socket.pause();
  await new Promise((r) => setTimeout(r, 1_000));
  signal(server, "SIGTERM");
  await server.exited;
  t.equal(server.exitCode, 0, "the server exited after the grace period");
  t.match(readFileSync(join(dir, "server-grace.log"), "utf8"), /"cut":1/, "it cut the one request left");
  let received = 0;
  socket.on("data", (c: Buffer) => (received += c.length));
  socket.resume();
  await new Promise((r) => socket.once("close", r));
  t.ok(
    received < COUNT * filler.length,
    `the held LIST was cut (${received} bytes of ${COUNT * filler.length} reached it)`,
  );
});

t.test(
  "SIGTERM with --shutdown-delay: the member is served on new connections until the listener closes",
  async (t) => {
    const server = await startServer("server-delay.log", "20s", "5s");
    const heardBefore = goAwaysHeard();
    signal(server, "SIGTERM");
    const readyz = () =>
      new Promise<number>((resolve) => {
        const req = httpsRequest(`${url}/readyz`, { ca: ca.certPem, agent: false }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.once("error", () => resolve(0));
        req.end();
      });
    await until("/readyz answers 503", async () => (await readyz()) === 503);
    t.pass("readiness goes false at once: a balancer takes the server out of its rotation");
    const during = await get("/api");
    t.equal(await during.ended, true, "a request for the member on a new connection is answered whole");
    t.equal(
      during.res.statusCode,
      200,
      "and served: one replica keeps its agent's session through the delay",
    );
    t.equal(goAwaysHeard(), heardBefore, "the agent has not been sent away yet: it has nowhere else to go");
    await until("new connections are refused", connectionRefused);
    t.pass("once the delay is over the listener is closed");
    await server.exited;
    t.equal(server.exitCode, 0, "the server drained and exited 0");
    await until("the agent heard the go-away", () => goAwaysHeard() > heardBefore, 10_000);
    t.pass("the go-away came with the drain");
  },
);
