// TetherMetrics on its own: what each hook counts, bytes that stay monotonic
// over reconnects, why sessions ended, bounded labels, a removed cluster's
// series dropped; and the store decorator timing and counting failures.
import { EventEmitter } from "node:events";
import type { IncomingMessage, ServerResponse } from "node:http";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Session } from "@tether/tunnel";
import { ErrorCode } from "@tether/tunnel";
import t from "tap";
import { has, value } from "../../../../test/tools/exposition.js";
import { instrumentStore } from "../../src/observe/instrumented-store.js";
import { TetherMetrics } from "../../src/observe/metrics.js";
import { FileStore } from "../../src/store/file-store.js";

class FakeSession extends EventEmitter {
  bytesSent = 0;
  bytesReceived = 0;
  streamCount = 0;
  rtt: number | undefined;
  goingAway = false;
  close(err?: Error) {
    this.emit("close", err);
  }
}
const asSession = (s: FakeSession) => s as unknown as Session;

const text = async (m: TetherMetrics) => (await m.exposition()).body;

function fakeExchange(method: string) {
  const res = new EventEmitter() as EventEmitter & { headersSent: boolean; statusCode: number };
  res.headersSent = false;
  res.statusCode = 200;
  return {
    req: { method } as IncomingMessage,
    res,
    asRes: res as unknown as ServerResponse,
  };
}

t.test("a forwarded request is timed by cluster, verb and status class", async (t) => {
  const m = new TetherMetrics();
  const list = fakeExchange("GET");
  m.requestStarted(list.req, list.asRes, "c1", "/api/v1/namespaces/default/pods");
  t.equal(value(await text(m), "tether_proxy_request_duration_seconds_count"), 0, "counted when it ends");
  list.res.headersSent = true;
  list.res.emit("close");
  const watch = fakeExchange("GET");
  m.requestStarted(watch.req, watch.asRes, "c1", "/api/v1/pods?watch=true");
  let out = await text(m);
  t.equal(value(out, "tether_proxy_long_requests_open", { cluster: "c1" }), 1, "a watch is a long request");
  watch.res.headersSent = true;
  watch.res.statusCode = 503;
  watch.res.emit("close");
  const gone = fakeExchange("PROPFIND");
  m.requestStarted(gone.req, gone.asRes, "c1", "/version");
  gone.res.emit("close");
  out = await text(m);
  t.equal(value(out, "tether_proxy_long_requests_open", { cluster: "c1" }), 0, "and ends");
  const count = (labels: Record<string, string>) =>
    value(out, "tether_proxy_request_duration_seconds_count", labels);
  t.equal(count({ cluster: "c1", verb: "list", code: "2xx" }), 1);
  t.equal(count({ cluster: "c1", verb: "watch", code: "5xx" }), 1);
  t.equal(
    count({ cluster: "c1", verb: "other", code: "none" }),
    1,
    "an unknown method is no new label value",
  );
  t.equal(
    value(out, "tether_proxy_request_duration_seconds_bucket", { verb: "list", le: "+Inf" }),
    1,
    "histogram buckets",
  );
});

t.test("sessions: counts, bytes over reconnects, RTT, why they ended", async (t) => {
  const m = new TetherMetrics();
  const first = new FakeSession();
  m.agentConnected("c1", asSession(first));
  first.bytesSent = 100;
  first.bytesReceived = 40;
  first.streamCount = 3;
  first.rtt = 12;
  let out = await text(m);
  t.equal(value(out, "tether_agents_connected"), 1);
  t.equal(value(out, "tether_agent_sessions", { state: "active" }), 1);
  t.equal(value(out, "tether_tunnel_streams_open", { cluster: "c1" }), 3);
  t.equal(value(out, "tether_tunnel_rtt_seconds", { cluster: "c1" }), 0.012);
  t.equal(value(out, "tether_tunnel_bytes_total", { cluster: "c1", direction: "sent" }), 100);

  // The agent reconnects: the first session drains beside the second.
  const second = new FakeSession();
  first.goingAway = true;
  m.agentConnected("c1", asSession(second));
  second.bytesSent = 5;
  out = await text(m);
  t.equal(value(out, "tether_agents_connected"), 1, "one cluster connected");
  t.equal(value(out, "tether_agent_sessions", { state: "draining" }), 1);
  t.equal(value(out, "tether_agent_connects_total", { result: "accepted" }), 2);
  first.close();
  out = await text(m);
  t.equal(value(out, "tether_agent_disconnects_total", { reason: "replaced" }), 1);
  t.equal(
    value(out, "tether_tunnel_bytes_total", { cluster: "c1", direction: "sent" }),
    105,
    "a closed session's bytes stay counted",
  );
  second.close(Object.assign(new Error("silent"), { code: ErrorCode.KEEPALIVE_TIMEOUT }));
  out = await text(m);
  t.equal(value(out, "tether_agent_disconnects_total", { reason: "dead_peer" }), 1);
  t.equal(value(out, "tether_agents_connected"), 0);
  t.notOk(
    has(out, "tether_tunnel_streams_open", { cluster: "c1" }),
    "no gauge for a cluster with no session",
  );
  t.equal(value(out, "tether_tunnel_bytes_total", { cluster: "c1", direction: "sent" }), 105);

  const third = new FakeSession();
  m.agentConnected("c1", asSession(third));
  m.closeReason(asSession(third), "certificate_revoked");
  m.closeReason(asSession(third), "shutdown");
  third.close();
  t.equal(
    value(await text(m), "tether_agent_disconnects_total", { reason: "certificate_revoked" }),
    1,
    "the first reason given stands",
  );
});

t.test("a removed cluster's series go", async (t) => {
  const m = new TetherMetrics();
  for (const cluster of ["gone", "kept"]) {
    const x = fakeExchange("GET");
    m.requestStarted(x.req, x.asRes, cluster, "/api");
    x.res.emit("close");
    m.upgradeStarted(cluster, "/api/v1/namespaces/d/pods/p/exec?command=sh")();
    const s = new FakeSession();
    s.bytesSent = 7;
    m.agentConnected(cluster, asSession(s));
    s.close();
  }
  // A watch and a port-forward still open when the cluster goes, ending after.
  const watch = fakeExchange("GET");
  m.requestStarted(watch.req, watch.asRes, "gone", "/api/v1/pods?watch=1");
  const endForward = m.upgradeStarted("gone", "/api/v1/namespaces/d/pods/p/portforward");
  let out = await text(m);
  t.ok(has(out, "tether_upgrades_total", { cluster: "gone", kind: "exec" }));
  t.equal(value(out, "tether_proxy_long_requests_open", { cluster: "gone" }), 1);
  await m.forgetCluster("gone");
  endForward();
  watch.res.headersSent = true;
  out = await text(m);
  t.notOk(
    has(out, "tether_upgrades_open", { cluster: "gone" }),
    "an upgrade ending later brings no series back",
  );
  t.notOk(has(out, "tether_proxy_long_requests_open", { cluster: "gone" }));
  out = await text(m);
  t.notOk(/cluster="gone"/.test(out), "no series names the removed cluster");
  t.ok(has(out, "tether_upgrades_total", { cluster: "kept", kind: "exec" }), "others stay");
  t.equal(value(out, "tether_tunnel_bytes_total", { cluster: "kept", direction: "sent" }), 7);
});

t.test("upgrades, refusals, joins, renewals, authentication failures", async (t) => {
  const m = new TetherMetrics();
  const end = m.upgradeStarted("c1", "/api/v1/namespaces/d/pods/p/portforward");
  m.upgradeStarted("c1", "/api/v1/namespaces/d/pods/p/attach?stdin=true");
  let out = await text(m);
  t.equal(value(out, "tether_upgrades_open", { kind: "portforward" }), 1);
  end();
  end();
  out = await text(m);
  t.equal(value(out, "tether_upgrades_open", { kind: "portforward" }), 0, "ending twice counts once");
  t.equal(value(out, "tether_upgrades_total", { kind: "attach" }), 1);
  m.refused("caller_quota");
  m.refusedFull(Object.assign(new Error("full"), { code: ErrorCode.STREAM_LIMIT }));
  m.refusedFull(Object.assign(new Error("reset"), { code: ErrorCode.STREAM_RESET }));
  m.joinAnswered(200);
  m.joinAnswered(401);
  m.renewal("refused");
  m.authFailure("admin", "invalid_credential");
  out = await text(m);
  t.equal(value(out, "tether_proxy_refused_total", { reason: "caller_quota" }), 1);
  t.equal(value(out, "tether_proxy_refused_total", { reason: "session_full" }), 1);
  t.equal(value(out, "tether_proxy_refused_total", { reason: "agent_stream_limit" }), 1);
  t.equal(value(out, "tether_joins_total", { result: "success" }), 1);
  t.equal(value(out, "tether_joins_total", { result: "invalid_token" }), 1);
  t.equal(value(out, "tether_renewals_total", { result: "refused" }), 1);
  t.equal(value(out, "tether_authentication_failures_total", { endpoint: "admin" }), 1);
  t.ok(has(out, "process_cpu_seconds_total"), "prom-client's process metrics");
  t.ok(has(out, "tether_build_info"));
});

t.test("the store decorator times each operation and counts failures", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "tether-metrics-store-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const m = new TetherMetrics();
  const store = instrumentStore(await FileStore.open(join(dir, "state")), m);
  t.equal(await store.getCluster("nope"), undefined, "answers pass through");
  await store.listClusters();
  await t.rejects(store.putCluster({ name: "Not A Name" } as never), "errors pass through");
  t.equal(store.describe(), join(dir, "state"), "synchronous members pass through");
  const out = await text(m);
  t.equal(value(out, "tether_store_operation_duration_seconds_count", { operation: "getCluster" }), 1);
  t.equal(value(out, "tether_store_operation_duration_seconds_count", { operation: "putCluster" }), 1);
  t.equal(value(out, "tether_store_operation_errors_total", { operation: "putCluster" }), 1);
  t.equal(value(out, "tether_store_operation_errors_total", { operation: "getCluster" }), 0);
});
