// Issue 12, must show: a request on a session that died silently (the
// agent's connection blackholed by toxiproxy: nothing arrives, nothing
// closes) gets a 503 Status from the probe, not after the dead-peer timeout;
// the dead session leaves the registry, so the next request gets its 503 at
// once; and once the network heals the agent is back. Both dead-peer timeouts
// here are far longer than the requests' liveness bound, so only the probe can
// answer in time.
import { request } from "node:https";
import { inClusterTarget, TetherAgent } from "@tether/agent";
import { issueToken } from "@tether/server";
import { ErrorCode, type TetherError } from "@tether/tunnel";
import t from "tap";
import { startClusters } from "../kube/index.js";
import { bindTetherAdmins, prepareMember, startTether, until } from "./fixture.js";
import { startToxiproxy } from "./toxiproxy.js";

/** Liveness bound of one request: well under either dead-peer timeout. */
const REQUEST_LIMIT_MS = 20_000;
const SLOW_DEATH = { keepAliveInterval: 20_000, deadPeerTimeout: 120_000 };

const set = await startClusters(1);
t.teardown(() => set.stop());
const member = set.clusters[0]!;
const tether = await startTether({ tunnel: SLOW_DEATH });
t.teardown(() => tether.stop());
const toxi = await startToxiproxy(tether.dir);
t.teardown(() => toxi.stop());
await bindTetherAdmins(member);
await tether.registerCluster("m1");

const serverPort = new URL(tether.server.url).port;
const listen = await toxi.proxy("agent", `127.0.0.1:${serverPort}`);
const saDir = `${tether.dir}/sa`;
const env = await prepareMember(member, saDir);
const uid = (await tether.store.getCluster("m1"))?.uid;
const cert = await tether.ca.issueClusterCertificate("m1", uid ? { incarnation: uid } : {});
await tether.store.recordIssued(cert.serial, "m1", cert.notAfter.toISOString());
const agent = new TetherAgent({
  server: `https://127.0.0.1:${listen}`,
  caPem: tether.ca.certPem,
  certPem: cert.certPem,
  keyPem: cert.keyPem!,
  target: inClusterTarget(env, saDir),
  tunnel: SLOW_DEATH,
  backoff: { baseMs: 100, capMs: 1_000 },
});
agent.start();
t.teardown(() => agent.stop());
await agent.whenConnected();

const { token, hash } = issueToken();
await tether.store.addToken({
  hash,
  kind: "user",
  user: "alice",
  groups: ["admins"],
  clusters: ["m1"],
  expiresAt: new Date(Date.now() + 3600_000).toISOString(),
});

interface Reply {
  status: number;
  body: { kind?: string; reason?: string; message?: string; code?: number };
}

/** One GET through /clusters/m1/, on the server's pooled tunnel streams. */
function get(path: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${tether.server.url}/clusters/m1${path}`,
      { ca: tether.ca.certPem, headers: { authorization: `Bearer ${token}` }, timeout: REQUEST_LIMIT_MS },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (text += c));
        res.on("end", () => {
          let body: Reply["body"] = {};
          try {
            body = JSON.parse(text);
          } catch {}
          resolve({ status: res.statusCode ?? 0, body });
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error(`no answer within ${REQUEST_LIMIT_MS} ms`)));
    req.on("error", reject);
    req.end();
  });
}

t.test("a request on a blackholed session gets its 503 from the probe", async (t) => {
  const warm = await get("/api");
  t.equal(warm.status, 200, "through the proxy, before the blackhole");
  const entry = tether.server.sessions.get("m1")!;
  const reason = new Promise<TetherError | undefined>((resolve) => entry.session.once("close", resolve));
  // The agent's answer to the warm-up now waits on nothing: only the server has a reason to probe.
  await entry.session.ping();

  await toxi.blackhole("agent");
  const dead = await get("/api");
  t.equal(dead.status, 503, "503");
  t.equal(dead.body.kind, "Status", "a Kubernetes Status");
  t.equal(dead.body.reason, "ServiceUnavailable");
  t.match(dead.body.message, /disconnected during the request/);
  t.equal((await reason)?.code, ErrorCode.KEEPALIVE_TIMEOUT, "the server's probe declared the session dead");
  t.equal(tether.server.sessions.get("m1"), undefined, "and dropped it from the registry");

  const next = await get("/api");
  t.equal(next.status, 503, "the next request gets its 503 too");
  t.match(next.body.message, /no connected Tether agent/, "at once: there is no session to wait on");

  await toxi.heal("agent");
  await until(
    "the agent is back once the network heals",
    async () => (await get("/api")).status === 200,
    60_000,
  );
  t.notOk(tether.server.sessions.get("m1")?.session.closed, "on a new session");
});
