// Issue 15, must show: /metrics scraped before and after a data-path run on
// the real harness — kubectl list, a watch that ends, exec, port-forward, a
// refused caller, a caller over its quota, a bad join and a refused renewal —
// moves the counters and histograms by exactly what happened; the exposition
// passes the strict check (expfmt + promlint, test/tools/promlint), holds no
// token, and every tether_ family it declares is the one docs/metrics.md
// documents, with the same type.
import { readFile } from "node:fs/promises";
import { type ClientRequest, createServer, type IncomingMessage } from "node:http";
import { request } from "node:https";
import { join } from "node:path";
import { AgentMetrics, keyAndCsr } from "@tether/agent";
import { hashToken, issueToken } from "@tether/server";
import t from "tap";
import { type Cluster, startClusters } from "../kube/index.js";
import { has, value } from "../tools/exposition.js";
import { lintExposition } from "../tools/go-tool.js";
import { bindTetherAdmins, type Fixture, startTether, until } from "./fixture.js";

const SCRAPE_TOKEN = `scrape-${issueToken().token}`;
const QUOTA = 8;
const CLUSTER = "member1";

const set = await startClusters(1);
t.teardown(() => set.stop());
const member = set.clusters[0] as Cluster;
const tether: Fixture = await startTether({
  metricsToken: SCRAPE_TOKEN,
  limits: { maxStreamsPerCaller: QUOTA },
});
t.teardown(() => tether.stop());
await tether.registerCluster(CLUSTER);
const agentMetrics = new AgentMetrics();
const agentMetricsServer = await agentMetrics.listen("127.0.0.1", 0);
t.teardown(() => new Promise<void>((r) => agentMetricsServer.close(() => r())));
const agentMetricsUrl = `http://127.0.0.1:${(agentMetricsServer.address() as { port: number }).port}/metrics`;
const agent = await tether.startAgent(CLUSTER, member, { metrics: agentMetrics });
await bindTetherAdmins(member);
await member.createPod("default", "box");
const kubeconfig = await tether.userKubeconfig(CLUSTER, "alice", ["admins"]);

async function userToken(user: string): Promise<string> {
  const { token, hash } = issueToken();
  await tether.store.addToken({
    hash,
    kind: "user",
    user,
    groups: ["admins"],
    clusters: [CLUSTER],
    expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  });
  return token;
}

function send(
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string,
): { req: ClientRequest; response: Promise<IncomingMessage> } {
  const req = request(`${tether.server.url}${path}`, {
    method,
    ca: tether.ca.certPem,
    agent: false,
    headers,
  });
  const response = new Promise<IncomingMessage>((resolve, reject) => {
    req.once("response", resolve);
    req.once("error", reject);
  });
  req.end(body);
  return { req, response };
}

async function text(res: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

async function scrape(): Promise<string> {
  const res = await send("GET", "/metrics", { authorization: `Bearer ${SCRAPE_TOKEN}` }).response;
  if (res.statusCode !== 200) throw new Error(`GET /metrics: ${res.statusCode}`);
  return text(res);
}

/** The change of `name`'s samples matching `labels` between two scrapes. */
const delta = (before: string, after: string, name: string, labels: Record<string, string> = {}) =>
  value(after, name, labels) - value(before, name, labels);
const requests = (verb: string, code = "2xx") => ({ cluster: CLUSTER, verb, code });
const DURATION = "tether_proxy_request_duration_seconds_count";

const k = (args: string[], input?: string) =>
  member.kubectl(args, { kubeconfig, ...(input === undefined ? {} : { input }) });

t.test("kubectl list: one list request, timed by verb and status class", async (t) => {
  const before = await scrape();
  const r = await k(["get", "configmaps", "-n", "default", "-o", "name"]);
  t.equal(r.code, 0, r.stderr);
  const after = await scrape();
  t.equal(delta(before, after, DURATION, requests("list")), 1, "exactly one list");
  t.equal(delta(before, after, DURATION, requests("watch")), 0, "no watch");
  t.equal(
    delta(before, after, "tether_proxy_request_duration_seconds_bucket", { ...requests("list"), le: "+Inf" }),
    1,
    "in the +Inf bucket too",
  );
  t.ok(
    delta(before, after, "tether_store_operation_duration_seconds_count", { operation: "getCluster" }) >= 1,
    "admission read the cluster through the instrumented store",
  );
});

t.test("a watch is open while it runs and timed when it ends", async (t) => {
  const before = await scrape();
  const watch = member.spawnKubectl(["get", "configmaps", "-n", "default", "--watch-only", "-o", "name"], {
    kubeconfig,
  });
  t.teardown(() => watch.stop());
  await until("the watch is open", async () => {
    return value(await scrape(), "tether_proxy_long_requests_open", { cluster: CLUSTER }) === 1;
  });
  const during = await scrape();
  t.ok(value(during, "tether_tunnel_streams_open", { cluster: CLUSTER }) >= 1, "its stream is open");
  t.equal(delta(before, during, DURATION, requests("watch")), 0, "not timed while it runs");
  await member.kubectl(["create", "configmap", "seen-by-the-watch"]);
  await watch.waitFor(/configmap\/seen-by-the-watch/);
  await watch.stop();
  await until("the watch ended", async () => {
    return value(await scrape(), "tether_proxy_long_requests_open", { cluster: CLUSTER }) === 0;
  });
  const after = await scrape();
  t.equal(delta(before, after, DURATION, requests("watch")), 1, "one watch, timed once it ended");
});

t.test("exec: one upgrade, open while it runs, its bytes counted", async (t) => {
  const before = await scrape();
  const input = "x".repeat(64 * 1024);
  const r = await k(["exec", "-i", "box", "--", "sh", "-c", "wc -c"], input);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout.trim(), String(input.length));
  await until("the upgrade closed", async () => {
    return value(await scrape(), "tether_upgrades_open", { cluster: CLUSTER, kind: "exec" }) === 0;
  });
  const after = await scrape();
  t.equal(delta(before, after, "tether_upgrades_total", { cluster: CLUSTER, kind: "exec" }), 1);
  t.equal(delta(before, after, "tether_upgrades_total", { cluster: CLUSTER, kind: "portforward" }), 0);
  t.ok(
    delta(before, after, "tether_tunnel_bytes_total", { cluster: CLUSTER, direction: "sent" }) >=
      input.length,
    "the input went to the agent",
  );
  t.ok(delta(before, after, "tether_tunnel_bytes_total", { cluster: CLUSTER, direction: "received" }) > 0);
  t.equal(delta(before, after, DURATION, requests("get")), 1, "kubectl read the pod first");
  t.equal(delta(before, after, DURATION), 1, "the upgrade itself is not a timed request");
});

t.test("port-forward: one upgrade of its kind", async (t) => {
  const http = createServer((_req, res) => res.end("forwarded"));
  await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
  t.teardown(() => new Promise<void>((r) => http.close(() => r())));
  const port = (http.address() as { port: number }).port;
  const before = await scrape();
  const pf = member.spawnKubectl(["port-forward", "pod/box", `:${port}`], { kubeconfig });
  t.teardown(() => pf.stop());
  const m = await pf.waitFor(/Forwarding from 127\.0\.0\.1:(\d+) ->/);
  t.equal(await (await fetch(`http://127.0.0.1:${m[1]}/`)).text(), "forwarded");
  const during = await scrape();
  t.equal(value(during, "tether_upgrades_open", { cluster: CLUSTER, kind: "portforward" }), 1);
  await pf.stop();
  await until("the port-forward closed", async () => {
    return value(await scrape(), "tether_upgrades_open", { cluster: CLUSTER, kind: "portforward" }) === 0;
  });
  const after = await scrape();
  t.equal(delta(before, after, "tether_upgrades_total", { cluster: CLUSTER, kind: "portforward" }), 1);
});

t.test("refusals: an unauthenticated caller and a caller over its quota", async (t) => {
  const before = await scrape();
  const anonymous = await send("GET", `/clusters/${CLUSTER}/api/v1/namespaces`).response;
  t.equal(anonymous.statusCode, 401);
  await text(anonymous);
  const wrong = await send("GET", `/clusters/${CLUSTER}/api/v1/namespaces`, {
    authorization: "Bearer tether_not-a-token",
  }).response;
  t.equal(wrong.statusCode, 401);
  await text(wrong);

  // Bob holds QUOTA watches; one more request of his is refused with 429.
  const bob = { authorization: `Bearer ${await userToken("bob")}` };
  const held = Array.from({ length: QUOTA }, () =>
    send("GET", `/clusters/${CLUSTER}/api/v1/namespaces/default/configmaps?watch=true`, bob),
  );
  t.teardown(() => {
    for (const h of held) h.req.destroy();
  });
  for (const h of held) t.equal((await h.response).statusCode, 200);
  const during = await scrape();
  t.equal(value(during, "tether_proxy_long_requests_open", { cluster: CLUSTER }), QUOTA);
  const over = await send("GET", `/clusters/${CLUSTER}/api/v1/namespaces`, bob).response;
  t.equal(over.statusCode, 429);
  await text(over);
  for (const h of held) h.req.destroy();
  await until("bob's watches ended", async () => {
    return value(await scrape(), "tether_proxy_long_requests_open", { cluster: CLUSTER }) === 0;
  });
  const after = await scrape();
  t.equal(delta(before, after, "tether_proxy_refused_total", { reason: "unauthorized" }), 2);
  t.equal(delta(before, after, "tether_proxy_refused_total", { reason: "caller_quota" }), 1);
  t.equal(delta(before, after, "tether_proxy_refused_total"), 3, "nothing else refused");
  t.equal(
    delta(before, after, "tether_authentication_failures_total", {
      endpoint: "proxy",
      reason: "invalid_credential",
    }),
    2,
  );
  t.equal(delta(before, after, DURATION, requests("watch")), QUOTA, "each of bob's watches, once ended");
  t.equal(delta(before, after, DURATION, requests("list")), 0, "refused requests are not timed");
});

t.test("a join with a bad token and a renewal refused as too early", async (t) => {
  const before = await scrape();
  const agentBefore = await (await fetch(agentMetricsUrl)).text();
  const { csrPem } = await keyAndCsr(CLUSTER);
  const join = send(
    "POST",
    "/join/v1/certificate",
    { "content-type": "application/json" },
    JSON.stringify({ cluster: CLUSTER, token: issueToken().token, csr: csrPem }),
  );
  const res = await join.response;
  t.equal(res.statusCode, 401);
  await text(res);
  // The agent's certificate is brand new: the server refuses to renew it yet.
  await agent.renew();
  await until("the renewal was counted", async () => {
    return value(await scrape(), "tether_renewals_total", { result: "refused" }) > 0;
  });
  const after = await scrape();
  t.equal(delta(before, after, "tether_joins_total", { result: "invalid_token" }), 1);
  t.equal(delta(before, after, "tether_joins_total"), 1);
  t.equal(
    delta(before, after, "tether_authentication_failures_total", { endpoint: "join" }),
    1,
    "a bad join token is a failed authentication",
  );
  t.equal(delta(before, after, "tether_renewals_total", { result: "refused" }), 1);
  t.equal(delta(before, after, "tether_renewals_total", { result: "success" }), 0);
  const agentAfter = await (await fetch(agentMetricsUrl)).text();
  t.equal(delta(agentBefore, agentAfter, "tether_agent_renewals_total", { result: "failure" }), 1);
});

t.test("the whole exposition: sessions, strict format, no secrets, as documented", async (t) => {
  const out = await scrape();
  t.equal(value(out, "tether_agents_connected"), 1);
  t.equal(value(out, "tether_agent_sessions", { state: "active" }), 1);
  t.equal(value(out, "tether_agent_connects_total", { result: "accepted" }), 1);
  t.ok(has(out, "tether_tunnel_rtt_seconds", { cluster: CLUSTER }), "the tunnel's RTT");
  t.ok(value(out, "tether_tunnel_rtt_seconds", { cluster: CLUSTER }) > 0);
  const lint = await lintExposition(out);
  t.ok(lint.ok, `expfmt and promlint: ${lint.output}`);

  const kc = await readFile(kubeconfig, "utf8");
  const aliceToken = /token: (\S+)/.exec(kc)?.[1] ?? "";
  t.ok(aliceToken.startsWith("tether_"));
  for (const secret of [SCRAPE_TOKEN, aliceToken, hashToken(aliceToken)]) {
    t.notOk(out.includes(secret), "no token or token hash in the exposition");
  }
  t.notOk(/user="|alice|bob/.test(out), "no user in any label");

  t.same(declaredFamilies(out), await documentedFamilies("server"), "docs/metrics.md lists exactly these");
});

t.test("the agent's exposition: its session, streams and bytes, strict format, as documented", async (t) => {
  const res = await fetch(agentMetricsUrl);
  t.equal(res.status, 200);
  const out = await res.text();
  t.equal(value(out, "tether_agent_connected"), 1);
  t.equal(value(out, "tether_agent_dials_total", { result: "connected" }), 1);
  t.equal(value(out, "tether_agent_reconnects_total"), 0);
  t.ok(
    value(out, "tether_agent_streams_total", { result: "accepted" }) >= QUOTA + 2,
    "a stream for each of bob's concurrent watches, the exec and the port-forward (plain requests share pooled ones)",
  );
  t.equal(value(out, "tether_agent_streams_total", { result: "refused" }), 0);
  t.ok(value(out, "tether_agent_tunnel_bytes_total", { direction: "received" }) >= 64 * 1024, "exec input");
  t.ok(value(out, "tether_agent_tunnel_rtt_seconds") > 0);
  t.equal((await fetch(agentMetricsUrl.replace("/metrics", "/other"))).status, 404);
  const lint = await lintExposition(out);
  t.ok(lint.ok, `expfmt and promlint: ${lint.output}`);
  t.same(declaredFamilies(out), await documentedFamilies("agent"), "docs/metrics.md lists exactly these");
});

/** The tether_ families an exposition declares, with their types. */
function declaredFamilies(exposition: string): Record<string, string> {
  return Object.fromEntries(
    [...exposition.matchAll(/^# TYPE (tether_[a-z_]+) (\w+)$/gm)].map((m) => [m[1]!, m[2]!]),
  );
}

/** docs/metrics.md's table rows (| `tether_name` | type | labels | meaning |) for the server or the agent. */
async function documentedFamilies(of: "server" | "agent"): Promise<Record<string, string>> {
  const doc = await readFile(join(import.meta.dirname, "../../docs/metrics.md"), "utf8");
  const agentAt = doc.indexOf("## tether-agent");
  const section =
    of === "server" ? doc.slice(doc.indexOf("### Server metrics"), agentAt) : doc.slice(agentAt);
  return Object.fromEntries(
    [...section.matchAll(/^\| `(tether_[a-z_]+)` +\| +(counter|gauge|histogram) +\|/gm)].map((m) => [
      m[1]!,
      m[2]!,
    ]),
  );
}
