// AgentMetrics: the session's state and bytes over reconnects, dials and
// streams by result, the HTTP endpoint (GET /metrics only), and the
// --metrics-address flag's parsing.
import { EventEmitter } from "node:events";
import type { Session } from "@tether/tunnel";
import t from "tap";
import { value } from "../../../test/tools/exposition.js";
import { buildProgram } from "../src/cli.js";
import { AgentMetrics, portOf } from "../src/metrics.js";

class FakeSession extends EventEmitter {
  bytesSent = 0;
  bytesReceived = 0;
  streamCount = 0;
  rtt: number | undefined;
  closed = false;
  close() {
    this.closed = true;
    this.emit("close");
  }
}

t.test("session state, bytes over reconnects, counters", async (t) => {
  const m = new AgentMetrics();
  const text = () => m.registry.metrics();
  t.equal(value(await text(), "tether_agent_connected"), 0);
  const first = new FakeSession();
  m.dialed("connected");
  m.sessionStarted(first as unknown as Session);
  first.bytesSent = 10;
  first.bytesReceived = 20;
  first.streamCount = 2;
  first.rtt = 4;
  let out = await text();
  t.equal(value(out, "tether_agent_connected"), 1);
  t.equal(value(out, "tether_agent_tunnel_streams_open"), 2);
  t.equal(value(out, "tether_agent_tunnel_rtt_seconds"), 0.004);
  first.close();
  m.reconnecting("session_lost");
  m.dialed("failed");
  out = await text();
  t.equal(value(out, "tether_agent_connected"), 0);
  t.equal(value(out, "tether_agent_tunnel_rtt_seconds"), 0, "no RTT without a session");
  const second = new FakeSession();
  m.sessionStarted(second as unknown as Session);
  second.bytesSent = 1;
  m.stream(true);
  m.stream(false);
  m.renewal(true);
  m.apiserverError();
  out = await text();
  t.equal(
    value(out, "tether_agent_tunnel_bytes_total", { direction: "sent" }),
    11,
    "monotonic over sessions",
  );
  t.equal(value(out, "tether_agent_tunnel_bytes_total", { direction: "received" }), 20);
  t.equal(value(out, "tether_agent_dials_total", { result: "connected" }), 1);
  t.equal(value(out, "tether_agent_dials_total", { result: "failed" }), 1);
  t.equal(value(out, "tether_agent_reconnects_total", { reason: "session_lost" }), 1);
  t.equal(value(out, "tether_agent_streams_total", { result: "refused" }), 1);
  t.equal(value(out, "tether_agent_renewals_total", { result: "success" }), 1);
  t.equal(value(out, "tether_agent_apiserver_errors_total"), 1);
});

t.test("the endpoint answers GET /metrics only", async (t) => {
  const m = new AgentMetrics();
  const server = await m.listen("127.0.0.1", 0);
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const base = `http://127.0.0.1:${portOf(server)}`;
  const ok = await fetch(`${base}/metrics`);
  t.equal(ok.status, 200);
  t.match(ok.headers.get("content-type"), /^text\/plain; version=0\.0\.4/);
  t.match(await ok.text(), /^tether_agent_build_info\{version="[^"]+"\} 1$/m);
  t.equal((await fetch(`${base}/`)).status, 404);
  t.equal((await fetch(`${base}/metrics`, { method: "POST" })).status, 404);
});

t.test("--metrics-address takes host:port", async (t) => {
  const parse = (value: string) => {
    const program = buildProgram().exitOverride();
    program.configureOutput({ writeErr: () => {} });
    program.action(() => {});
    program.parse(["node", "tether-agent", "--server", "https://x", "--metrics-address", value]);
    return program.opts().metricsAddress;
  };
  t.same(parse("127.0.0.1:9464"), { host: "127.0.0.1", port: 9464 });
  t.same(parse("[::1]:9464"), { host: "::1", port: 9464 });
  t.same(parse("0.0.0.0:0"), { host: "0.0.0.0", port: 0 });
  t.throws(() => parse("9464"), /host:port/);
  t.throws(() => parse("localhost:99999"), /host:port/);
  t.equal(buildProgram().opts().metricsAddress, undefined, "off by default");
});
