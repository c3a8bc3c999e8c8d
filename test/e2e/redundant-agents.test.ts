// Issue 14, redundant agents: two agent processes of one member hold a
// session each; requests are spread over both. kill -9 one under a GET loop:
// only requests in flight on it fail, and new streams all go to the survivor
// once the server sees the session gone. Failures and that time are reported.
// SIGTERM to one under the same loop: it sends go-away, drains, and no GET fails.
import { writeFile } from "node:fs/promises";
import { Agent as HttpsAgent, request } from "node:https";
import { join } from "node:path";
import { issueToken } from "@tether/server";
import t from "tap";
import { startClusters } from "../kube/index.js";
import { bindTetherAdmins, prepareMember, startTether, until } from "./fixture.js";
import { signal, spawnAgent } from "./tether-processes.js";

const set = await startClusters(1);
t.teardown(() => set.stop());
const tether = await startTether();
t.teardown(() => tether.stop());
const member = set.clusters[0]!;
await tether.registerCluster("m1");
await bindTetherAdmins(member);
const saDir = join(tether.dir, "sa");
const env = await prepareMember(member, saDir);
const uid = (await tether.store.getCluster("m1"))?.uid;
const cert = await tether.ca.issueClusterCertificate("m1", uid ? { incarnation: uid } : {});
await tether.store.recordIssued(cert.serial, "m1", cert.notAfter.toISOString());
const files = {
  caFile: join(tether.dir, "agent-ca.crt"),
  certFile: join(tether.dir, "agent.crt"),
  keyFile: join(tether.dir, "agent.key"),
};
await writeFile(files.caFile, tether.ca.certPem);
await writeFile(files.certFile, cert.certPem);
await writeFile(files.keyFile, cert.keyPem!, { mode: 0o600 });
const { token, hash } = issueToken();
await tether.store.addToken({
  hash,
  kind: "user",
  user: "alice",
  groups: ["admins"],
  clusters: ["m1"],
  expiresAt: new Date(Date.now() + 3600_000).toISOString(),
});

const agents = [1, 2].map((n) =>
  spawnAgent({
    server: tether.server.url,
    ...files,
    env,
    serviceAccountDir: saDir,
    logFile: join(tether.dir, `agent-${n}.log`),
  }),
);
t.teardown(() => Promise.all(agents.map((a) => a.stop())));
const sessions = () => tether.server.sessions.usable("m1");
await until("both agents hold a session", () => sessions().length === 2);

const keepAlive = new HttpsAgent({ keepAlive: true, ca: tether.ca.certPem });
t.teardown(() => keepAlive.destroy());

/** One GET: when it began and ended, its status (0: no answer, or an answer cut), and why it failed. */
interface Get {
  start: number;
  end: number;
  status: number;
  /** What a GET without a whole answer failed with, and whether its head had come. */
  error?: string;
}
function get(): Promise<Get> {
  const start = Date.now();
  return new Promise((resolve) => {
    const done = (status: number, error?: string) =>
      resolve({ start, end: Date.now(), status, ...(error ? { error } : {}) });
    const req = request(
      `${tether.server.url}/clusters/m1/api/v1/namespaces/default`,
      { agent: keepAlive, headers: { authorization: `Bearer ${token}` }, timeout: 10_000 },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          if (res.statusCode !== 200 && body.length < 300) body += c;
        });
        res.on("end", () =>
          done(res.statusCode ?? 0, res.statusCode === 200 ? undefined : body.slice(0, 300)),
        );
        res.on("error", (err) => done(0, `response ${res.statusCode} cut after its head: ${err.message}`));
        res.on("aborted", () => done(0, `response ${res.statusCode} aborted after its head`));
      },
    );
    req.on("timeout", () => req.destroy(new Error("timed out after 10 s")));
    req.on("error", (err) => done(0, `request: ${err.message}`));
    req.end();
  });
}

/** What went wrong with the failed GETs, for the test output. */
function describe(failed: Get[], since: number): string {
  return failed
    .map((f) => `${f.status} at ${f.start - since}..${f.end - since} ms: ${f.error ?? ""}`)
    .join("; ");
}

t.test("kill -9 one of two agents under a GET loop", async (t) => {
  const pair = sessions();
  // Every stream the server opens on either session, and when: the killed agent's tell how many
  // requests were in flight on it, and that none went to it once the server saw it gone.
  const opens = new Map(pair.map((e) => [e, [] as number[]]));
  for (const e of pair) {
    const open = e.session.open.bind(e.session);
    e.session.open = (...args) => {
      opens.get(e)!.push(Date.now());
      return open(...args);
    };
  }
  const results: Get[] = [];
  let running = true;
  const loop = async () => {
    while (running) results.push(await get());
  };
  // Four callers at once: at most four requests in flight.
  const loops = [loop(), loop(), loop(), loop()];
  await new Promise((r) => setTimeout(r, 3_000));
  const before = results.length;
  t.ok(
    pair.every((e) => opens.get(e)!.length > 0),
    "before the kill both sessions carried streams",
  );
  // The streams each session holds as the agent dies: requests in flight on it.
  const heldAtKill = new Map(pair.map((e) => [e, e.session.streamCount]));
  const killedAt = Date.now();
  signal(agents[0]!, "SIGKILL");
  // The first session to close is the killed agent's; from then on it is out of the cluster's sessions.
  const closed = await Promise.race(
    pair.map((e) => new Promise<typeof e>((r) => e.session.once("close", () => r(e)))),
  );
  const closedAt = Date.now();
  await until("the server has only the survivor", () => sessions().length === 1);
  t.ok(sessions()[0] !== closed && pair.includes(sessions()[0]!), "the other agent's session survives");
  await new Promise((r) => setTimeout(r, 3_000));
  running = false;
  await Promise.all(loops);
  const onVictim = opens.get(closed)!;
  const openedAfterKill = onVictim.filter((at) => at >= killedAt);
  const inFlight = heldAtKill.get(closed)! + openedAfterKill.length;
  const failed = results.filter((r) => r.status !== 200);
  const after = results.filter((r) => r.start > closedAt);
  t.comment(
    `${results.length} GETs (${before} before the kill); the killed agent's session held ${heldAtKill.get(closed)} streams at the kill ` +
      `and got ${openedAfterKill.length} more before the server saw it close ${closedAt - killedAt} ms after the kill (TCP close of a killed process; ` +
      `new streams all go to the survivor from then on); ${failed.length} GETs failed${failed.length ? ` (${describe(failed, killedAt)})` : ""}; ` +
      `${after.length} GETs began after that`,
  );
  t.ok(
    failed.length <= inFlight,
    `only requests in flight on the killed agent failed: ${failed.length} of its ${inFlight}`,
  );
  t.equal(
    onVictim.filter((at) => at > closedAt).length,
    0,
    "no stream went to the killed agent's session after the server saw it close",
  );
  t.ok(
    after.length > 0 && after.every((r) => r.status === 200),
    `every one of the ${after.length} GETs that began after that succeeded`,
  );
});

t.test("SIGTERM to one of two agents under a GET loop: it drains, nothing fails", async (t) => {
  const third = spawnAgent({
    server: tether.server.url,
    ...files,
    env,
    serviceAccountDir: saDir,
    logFile: join(tether.dir, "agent-3.log"),
  });
  agents.push(third);
  await until("two agents hold a session again", () => sessions().length === 2);
  const results: Get[] = [];
  let running = true;
  const loop = async () => {
    while (running) results.push(await get());
  };
  const loops = [loop(), loop(), loop(), loop()];
  await new Promise((r) => setTimeout(r, 2_000));
  const before = results.length;
  const termAt = Date.now();
  signal(agents[1]!, "SIGTERM");
  await agents[1]!.exited;
  const exitedAt = Date.now();
  t.equal(agents[1]!.exitCode, 0, "the stopped agent exited 0");
  await new Promise((r) => setTimeout(r, 2_000));
  running = false;
  await Promise.all(loops);
  const failed = results.filter((r) => r.status !== 200);
  t.comment(
    `${results.length} GETs (${before} before the SIGTERM; the agent exited ${exitedAt - termAt} ms after it), ${failed.length} failed${failed.length ? ` (${describe(failed, termAt)})` : ""}`,
  );
  // Once a todo: 2 of ~15 runs lost one GET whose response was cut after its head. The agent terminated
  // its WebSocket as soon as its session ended, dropping the last messages still queued (e265ae1: stop()
  // waits for the close handshake, agent-stop.test.ts). Since, 14 of 14 runs (203 to 1,116 GETs each,
  // load 5 to 23 on 2 cores) lost none. A request that crossed the go-away is sent again (go-away-resend).
  t.equal(failed.length, 0, "no GET failed while the agent drained and left");
  t.equal(sessions().length, 1, "the other agent serves alone");
});
