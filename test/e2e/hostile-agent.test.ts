// Issue 10, items 5 and 6: a hostile agent, speaking the real tunnel protocol
// (@tether/tunnel over ws) with a valid certificate of its cluster, cannot pin
// the server's memory or mint certificates: replaced sessions are closed after
// the drain timeout, one renewal stream at a time is accepted, an oversized
// body resets its stream, a renewal that never finishes hits the deadline, a
// young certificate is not renewed, and a cluster's renewals are rate-limited
// so the issued-serial list stays small. A name that is removed and registered
// again is a new incarnation: the old certificate is refused at connect (403)
// and at renewal. Afterwards a legitimate agent and caller of the same cluster
// work. Server memory is reported, not asserted.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { issueToken } from "@tether/server";
import { ResetCode, type Session } from "@tether/tunnel";
import t from "tap";
import { startClusters } from "../kube/index.js";
import { bindTetherAdmins, type Fixture, startTether, until } from "./fixture.js";
import { type Cert, connectAgent, csrBody, dialAgent, issueAgentCert, renewal } from "./tunnel-client.js";

const DRAIN_MS = 500;
const DEADLINE_MS = 1_500;

const clusterCert = (tether: Fixture, name: string, ttlMs?: number) =>
  issueAgentCert(tether.ca, tether.store, name, ttlMs);
const dial = (tether: Fixture, cert: Cert) => dialAgent(tether.server.url, tether.ca.certPem, cert);
const connect = (tether: Fixture, cert: Cert) => connectAgent(tether.server.url, tether.ca.certPem, cert);

async function issuedSerials(tether: Fixture): Promise<number> {
  const doc = JSON.parse(await readFile(join(tether.store.dir, "certs.json"), "utf8"));
  return Object.keys(doc.issued).length;
}

const rssMiB = () => Math.round(process.memoryUsage().rss / 2 ** 20);
/** Whether the session closes within `ms` (a liveness bound, not a timing assertion). */
const closesWithin = (s: Session, ms = 10_000) =>
  s.closed
    ? Promise.resolve(true)
    : new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), ms);
        s.once("close", () => {
          clearTimeout(timer);
          resolve(true);
        });
      });

t.test("a hostile agent", async (t) => {
  const set = await startClusters(1);
  t.teardown(() => set.stop());
  const member = set.clusters[0]!;
  await bindTetherAdmins(member);
  const tether = await startTether({ drainTimeoutMs: DRAIN_MS, renewal: { deadlineMs: DEADLINE_MS } });
  t.teardown(() => tether.stop());
  await tether.registerCluster("m1");
  const baseline = rssMiB();

  await t.test("reconnecting 3 times with renewal streams held open: old sessions are closed", async (t) => {
    const cert = await clusterCert(tether, "m1");
    const sessions: Session[] = [];
    for (let i = 0; i < 4; i++) {
      const session = await connect(tether, cert);
      sessions.push(session);
      // 1,000 renewal streams with half a body each: one is taken, the rest reset at once.
      const opened = Array.from({ length: 1000 }, () => {
        const r = renewal(session);
        r.stream.write('{"csr":"');
        return r.done;
      });
      const refused = await Promise.race([
        Promise.all(opened.slice(1)),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error("no resets")), 20_000)),
      ]);
      t.ok(
        refused.every((code) => code === ResetCode.STREAM_LIMIT),
        `session ${i}: 999 streams reset with STREAM_LIMIT`,
      );
    }
    const drained = await Promise.all(sessions.slice(0, 3).map((s) => closesWithin(s)));
    t.same(drained, [true, true, true], "the 3 replaced sessions were closed although each held a stream");
    await until(
      "only the current session is left on the server",
      () => tether.server.sessions.list().length === 1,
    );
    t.equal(tether.server.sessions.get("m1")?.session.streamCount, 1, "the current session holds one stream");
    sessions[3]!.close();
    await until("the server sees it go", () => tether.server.sessions.list().length === 0);
  });

  await t.test("an oversized body resets the stream; the deadline resets a stalled one", async (t) => {
    const session = await connect(tether, await clusterCert(tether, "m1"));
    t.teardown(() => session.close());
    const big = renewal(session);
    big.stream.write(Buffer.alloc(200 * 1024, 0x20));
    t.equal(await big.done, ResetCode.PROTOCOL_ERROR, "64 KiB + 1 is reset, not paused");
    const stalled = renewal(session);
    stalled.stream.write("{");
    t.equal(await stalled.done, ResetCode.TIMEOUT, "a body that never ends is reset at the deadline");
    const young = await renewal(session, await csrBody("m1")).done;
    t.match(String(young), /younger than a quarter of its lifetime/, "a fresh certificate is not renewed");
  });

  await t.test(
    "a renewal flood: one stream at a time, rate-limited, the serial list stays small",
    async (t) => {
      // Issued over a quarter of its 20 s life ago, so it may renew.
      const old = await clusterCert(tether, "m1", 20_000);
      await new Promise((r) => setTimeout(r, 5_100));
      const before = await issuedSerials(tether);
      const replies: (string | number)[] = [];
      for (let i = 0; i < 10; i++) {
        const session = await connect(tether, old);
        const body = await csrBody("m1");
        // 20 at once on one session: one is served, 19 are reset before reading anything.
        const flood = await Promise.all(Array.from({ length: 20 }, () => renewal(session, body).done));
        replies.push(...flood);
        replies.push(await renewal(session, body).done); // after the first: the session's certificate is new
        session.close();
      }
      const granted = replies.filter((r) => typeof r === "string" && r.includes('"certificate"')).length;
      const limited = replies.filter((r) => r === ResetCode.STREAM_LIMIT).length;
      t.ok(granted >= 1 && granted <= 3, `${granted} renewals granted of ${replies.length} asked`);
      t.ok(limited >= 10 * 18, `${limited} concurrent renewal streams reset with STREAM_LIMIT`);
      t.ok(
        replies.some((r) => typeof r === "string" && /renewed 3 times in a row/.test(r)),
        "later sessions are rate-limited",
      );
      const after = await issuedSerials(tether);
      t.ok(after - before <= 3, `the issued-serial list grew by ${after - before}`);
      t.comment(`issued serials: ${before} before the flood, ${after} after`);
    },
  );

  await t.test("afterwards a legitimate agent and caller of the same cluster work", async (t) => {
    await tether.startAgent("m1", member);
    const kubeconfig = await tether.userKubeconfig("m1", "alice", ["admins"]);
    const r = await member.kubectl(["get", "ns", "default", "-o", "name"], { kubeconfig });
    t.equal(r.code, 0, r.stderr);
    t.equal(r.stdout.trim(), "namespace/default");
    await new Promise((r) => setTimeout(r, 1_000));
    t.comment(`server process RSS: ${baseline} MiB before the hostile agent, ${rssMiB()} MiB after`);
  });
});

t.test("a removed and re-registered name is a new incarnation", async (t) => {
  // No periodic session check here: what refuses the old agent is the incarnation itself.
  const tether = await startTether({ sessionCheckIntervalMs: 3600_000 });
  t.teardown(() => tether.stop());
  await tether.registerCluster("m1");
  const cert = await clusterCert(tether, "m1", 8_000);
  const { token, hash } = issueToken();
  await tether.store.addToken({
    hash,
    kind: "admin",
    expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  });

  await t.test("cluster remove through the admin API closes the live session itself", async (t) => {
    const session = await connect(tether, cert);
    const res = await fetchInsecure(tether, "DELETE", "/admin/v1/clusters/m1", token);
    t.equal(res, 200);
    t.ok(await closesWithin(session), "closed without waiting for the session check");
  });

  await t.test("its revoked certificate is refused at connect with 403", async (t) => {
    await tether.registerCluster("m1");
    t.equal(await dial(tether, cert), 403);
  });

  await t.test("a session of the old incarnation gets no renewal", async (t) => {
    // A store-only remove (as the CLI on the state directory does) and a re-add, unseen by the server.
    const second = await clusterCert(tether, "m1", 20_000);
    const session = await connect(tether, second);
    t.teardown(() => session.close());
    await tether.store.deleteCluster("m1");
    await tether.registerCluster("m1");
    await new Promise((r) => setTimeout(r, 5_100)); // old enough to renew, were it still registered
    const reply = await renewal(session, await csrBody("m1")).done;
    t.match(JSON.parse(String(reply)), { error: /earlier registration of cluster "m1"/ });
    t.notMatch(String(reply), /certificate"/, "no certificate issued");
    t.equal(await dial(tether, second), 403, "unrevoked, but of the earlier incarnation: refused at connect");
  });
});

t.test("the session check closes a session whose name was registered again", async (t) => {
  const tether = await startTether({ sessionCheckIntervalMs: 200 });
  t.teardown(() => tether.stop());
  await tether.registerCluster("m1");
  const session = await connect(tether, await clusterCert(tether, "m1"));
  // Removed and added back in one write, so that no check can see the name missing in between.
  const path = join(tether.store.dir, "clusters.json");
  const doc = JSON.parse(await readFile(path, "utf8"));
  doc.clusters.m1.uid = "00000000-0000-4000-8000-000000000001";
  const { writeFile } = await import("node:fs/promises");
  await writeFile(path, JSON.stringify(doc));
  t.ok(await closesWithin(session), "closed by the session check");
});

async function fetchInsecure(tether: Fixture, method: string, path: string, token: string): Promise<number> {
  const { request } = await import("node:https");
  return new Promise((resolve, reject) => {
    const req = request(
      `${tether.server.url}${path}`,
      { method, ca: tether.ca.certPem, headers: { authorization: `Bearer ${token}` } },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    req.on("error", reject);
    req.end();
  });
}
