// Issue 13 part A: tether-server speaks HTTP/2 to host callers (ALPN h2,
// HTTP/1.1 on the same port), against a real member. Every endpoint answers
// an h2 caller; a member's connection-specific headers do not reach it; and
// an h2 caller is bounded like an HTTP/1.1 one: streams per connection,
// header size, rapid reset (CVE-2023-44487), a slow reader, the idle and
// request timeouts, the per-caller quota. After each attack a legitimate
// caller is still served. Timeouts bound liveness; nothing asserts a time.
import { type ClientHttp2Session, connect as h2connect } from "node:http2";
import { connect as tlsConnect } from "node:tls";
import { issueToken } from "@tether/server";
import t from "tap";
import { startClusters } from "../kube/index.js";
import { bindTetherAdmins, type Fixture, startTether, until } from "./fixture.js";
import { connectFakeAgent } from "./hostile/fake-agent.js";
import { getHeaders, H2_ERROR, RawH2 } from "./hostile/h2-raw.js";
import { issueAgentCert } from "./tunnel-client.js";

const set = await startClusters(1);
t.teardown(() => set.stop());
const member = set.clusters[0]!;
await bindTetherAdmins(member);

const MAX_STREAMS = 8;
const QUOTA = 16;
const tether = await startTether({
  limits: {
    http2MaxStreamsPerConnection: MAX_STREAMS,
    maxStreamsPerCaller: QUOTA,
    idleTimeoutMs: 1_000,
    headersTimeoutMs: 1_000,
    requestTimeoutMs: 1_000,
  },
});
t.teardown(() => tether.stop());
await tether.registerCluster("m1");
await tether.startAgent("m1", member);

async function userToken(fx: Fixture, cluster: string, user: string): Promise<string> {
  const { token, hash } = issueToken();
  await fx.store.addToken({
    hash,
    kind: "user",
    user,
    groups: ["admins"],
    clusters: [cluster],
    expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  });
  return token;
}

const port = () => tether.server.port;
async function raw(): Promise<RawH2> {
  const conn = await RawH2.open({ host: "127.0.0.1", port: port(), caPem: tether.ca.certPem });
  await conn.settled;
  return conn;
}

function h2(fx: Fixture = tether): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = h2connect(fx.server.url, { ca: fx.ca.certPem });
    session.once("error", reject);
    session.once("connect", () => {
      session.off("error", reject);
      session.on("error", () => {});
      resolve(session);
    });
  });
}

interface H2Response {
  status: number;
  headers: Record<string, unknown>;
  body: string;
}

function get(session: ClientHttp2Session, path: string, token?: string, method = "GET"): Promise<H2Response> {
  return new Promise((resolve, reject) => {
    const req = session.request({
      ":method": method,
      ":path": path,
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    });
    req.setTimeout(20_000, () => req.close());
    let head: Record<string, unknown> = {};
    const chunks: Buffer[] = [];
    req.on("response", (h) => {
      head = h;
    });
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () =>
      resolve({
        status: Number(head[":status"]),
        headers: head,
        body: Buffer.concat(chunks).toString("utf8"),
      }),
    );
    req.on("error", reject);
    req.end();
  });
}

const token = await userToken(tether, "m1", "alice");
const CONNECTION_HEADERS = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"];

/** Whether a fresh h2 caller is served: the member's /version through Tether. */
async function othersServed(): Promise<boolean> {
  const session = await h2();
  try {
    return (await get(session, "/clusters/m1/version", token)).status === 200;
  } finally {
    session.close();
  }
}

t.test("ALPN: h2 when offered, http/1.1 when only it is", async (t) => {
  const alpn = (protocols: string[]) =>
    new Promise<string | false>((resolve, reject) => {
      const s = tlsConnect({
        host: "127.0.0.1",
        port: port(),
        ca: tether.ca.certPem,
        ALPNProtocols: protocols,
      });
      s.once("error", reject);
      s.once("secureConnect", () => {
        resolve(s.alpnProtocol ?? false);
        s.destroy();
      });
    });
  t.equal(await alpn(["h2", "http/1.1"]), "h2", "a client offering both gets h2");
  t.equal(
    await alpn(["http/1.1"]),
    "http/1.1",
    "a client offering only http/1.1 (kubectl's upgrades) gets it",
  );
});

t.test("every endpoint answers an h2 caller", async (t) => {
  const session = await h2();
  t.teardown(() => session.close());
  const list = await get(session, "/clusters/m1/api/v1/namespaces", token);
  t.equal(list.status, 200, "a LIST through the tunnel");
  t.equal((JSON.parse(list.body) as { kind: string }).kind, "NamespaceList", "the member's own answer");
  for (const name of CONNECTION_HEADERS) t.notOk(name in list.headers, `no ${name} header`);
  const created = await new Promise<H2Response>((resolve, reject) => {
    const body = JSON.stringify({ metadata: { name: "h2-posted" }, data: { k: "v" } });
    const req = session.request({
      ":method": "POST",
      ":path": "/clusters/m1/api/v1/namespaces/default/configmaps",
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
      "content-length": Buffer.byteLength(body),
    });
    let head: Record<string, unknown> = {};
    let text = "";
    req.setEncoding("utf8");
    req.on("response", (h) => {
      head = h;
    });
    req.on("data", (c: string) => {
      text += c;
    });
    req.on("end", () => resolve({ status: Number(head[":status"]), headers: head, body: text }));
    req.on("error", reject);
    req.end(body);
  });
  t.equal(created.status, 201, `a POST with a body creates the object: ${created.body.slice(0, 200)}`);
  t.equal((await get(session, "/healthz")).status, 200, "/healthz");
  t.equal((await get(session, "/readyz")).status, 200, "/readyz");
  const status = (r: H2Response) => (JSON.parse(r.body) as { kind: string; code: number }).code;
  t.equal(status(await get(session, "/metrics")), 401, "/metrics without a credential: a Status 401");
  t.equal(status(await get(session, "/status")), 401, "/status without a credential: a Status 401");
  const admin = await get(session, "/admin/v1/clusters", "not-a-token");
  t.equal(admin.status, 401, "the admin API refuses a bad credential");
  const join = await get(session, "/join/v1/certificate", undefined, "POST");
  t.ok(join.status >= 400 && join.status < 500, `the join endpoint answers (${join.status})`);
  t.equal(status(await get(session, "/nowhere")), 404, "an unknown path: a Status 404");
  t.equal(status(await get(session, "/clusters/m1/version")), 401, "no token: a Status 401");
  t.equal(session.socket.remotePort, port(), "all of it over one connection");
});

t.test("a member's connection-specific headers are stripped for an h2 caller", async (t) => {
  await tether.registerCluster("fake");
  const cert = await issueAgentCert(tether.ca, tether.store, "fake");
  const fakeToken = await userToken(tether, "fake", "bob");
  const agent = await connectFakeAgent(
    tether.server.url,
    { caPem: tether.ca.certPem, certPem: cert.certPem, keyPem: cert.keyPem },
    (stream) => {
      stream.on("error", () => {});
      stream.once("data", () =>
        stream.end(
          "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: x-hop, keep-alive\r\nX-Hop: 1\r\n" +
            "Keep-Alive: timeout=5\r\nUpgrade: h2c\r\nProxy-Connection: keep-alive\r\nX-Kept: 1\r\n" +
            "Content-Length: 2\r\n\r\nok",
        ),
      );
    },
  );
  t.teardown(() => agent.ws.terminate());
  await until("the fake agent is attached", async () => tether.server.sessions.get("fake") !== undefined);
  const session = await h2();
  t.teardown(() => session.close());
  const res = await get(session, "/clusters/fake/version", fakeToken);
  t.equal(res.status, 200, "the member's answer reaches the h2 caller");
  t.equal(res.body, "ok", "with its body");
  t.equal(res.headers["x-kept"], "1", "an ordinary header is kept");
  for (const name of [...CONNECTION_HEADERS, "x-hop"]) t.notOk(name in res.headers, `${name} stripped`);
  t.ok(await othersServed(), "the server keeps serving");
});

t.test(
  "streams over SETTINGS_MAX_CONCURRENT_STREAMS never reach a handler; the connection is closed",
  async (t) => {
    const conn = await raw();
    t.teardown(() => conn.destroy());
    // Watches hold their streams open.
    const watch = "/clusters/m1/api/v1/namespaces/default/configmaps?watch=1";
    const ids = Array.from({ length: MAX_STREAMS }, () => conn.request(getHeaders(watch, token)));
    await until("the allowed watches are answered", async () => ids.every((id) => conn.answered.has(id)));
    const over = Array.from({ length: 200 }, () => conn.request(getHeaders(watch, token)));
    await until(
      "the server ends the flooding connection",
      async () => conn.goaway !== undefined || conn.closed,
    );
    t.notOk(
      over.some((id) => conn.answered.has(id)),
      "no stream over the limit was answered",
    );
    t.equal(conn.goaway, H2_ERROR.PROTOCOL_ERROR, "GOAWAY PROTOCOL_ERROR (RFC 9113 5.1.2)");
    t.ok(await othersServed(), "another caller is served");
  },
);

t.test("a header block over maxHeaderListSize is reset, the connection keeps serving", async (t) => {
  const conn = await raw();
  t.teardown(() => conn.destroy());
  const big = conn.request([...getHeaders("/clusters/m1/version", token), ["x-big", "a".repeat(32 * 1024)]]);
  const small = conn.request(getHeaders("/clusters/m1/version", token));
  await until("both streams are answered or reset", async () =>
    [big, small].every((id) => conn.resets.has(id) || conn.answered.has(id)),
  );
  t.equal(conn.resets.get(big), H2_ERROR.ENHANCE_YOUR_CALM, "the big one: RST_STREAM ENHANCE_YOUR_CALM");
  t.notOk(conn.answered.has(big), "it reached no handler");
  t.ok(conn.answered.has(small), "the next request on the same connection is answered");
  t.ok(await othersServed(), "another caller is served");
});

t.test(
  "before the client acknowledged the settings, Node's own header bound closes the connection",
  async (t) => {
    // Sent before the server's SETTINGS could even be read: its 16 KiB is not in force yet.
    const conn = await RawH2.open({ host: "127.0.0.1", port: port(), caPem: tether.ca.certPem });
    t.teardown(() => conn.destroy());
    const id = conn.request([...getHeaders("/clusters/m1/version", token), ["x-big", "a".repeat(70 * 1024)]]);
    await until("the server ends the connection", async () => conn.goaway !== undefined || conn.closed);
    t.equal(conn.goaway, H2_ERROR.COMPRESSION_ERROR, "GOAWAY COMPRESSION_ERROR");
    t.notOk(conn.answered.has(id), "the request reached no handler");
    t.ok(await othersServed(), "another caller is served");
  },
);

t.test("a header block that never ends: the connection is closed", async (t) => {
  const conn = await raw();
  t.teardown(() => conn.destroy());
  conn.request(getHeaders("/clusters/m1/version", token), true, false);
  const closed = await new Promise<boolean>((resolve) => {
    if (conn.closed) return resolve(true);
    const timer = setTimeout(() => resolve(false), 15_000);
    conn.socket.once("close", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
  t.ok(closed, "closed by the idle timeout: a block that never ends opens no stream");
  t.ok(await othersServed(), "another caller is served");
});

t.test("rapid reset (CVE-2023-44487): the server closes the connection", async (t) => {
  const conn = await raw();
  t.teardown(() => conn.destroy());
  let sent = 0;
  for (; sent < 20_000 && !conn.closed && conn.goaway === undefined; sent++) {
    conn.reset(conn.request(getHeaders("/clusters/m1/api/v1/namespaces", token)));
    if (sent % 50 === 49) await new Promise((r) => setTimeout(r, 1));
  }
  await until("the server ends the connection", async () => conn.goaway !== undefined || conn.closed);
  t.ok(
    sent < 20_000,
    `the connection was ended after ${sent} of 20,000 reset streams (GOAWAY ${conn.goaway})`,
  );
  t.ok(await othersServed(), "another caller is served");
  // The reset streams gave their quota slots back: the same user can hold its whole quota again.
  const session = await h2();
  t.teardown(() => session.close());
  await until("the reset streams' quota slots are back", async () => {
    const answers = await Promise.all(
      Array.from({ length: MAX_STREAMS }, () => get(session, "/clusters/m1/version", token)),
    );
    return answers.every((a) => a.status === 200);
  });
  t.pass("the same caller is served, not 429");
});

t.test("a slow reader holds only its own streams and quota", async (t) => {
  const slow = await h2();
  // Streams that never read a large response: the server may not send past the windows.
  const held = Array.from({ length: MAX_STREAMS }, () => {
    const req = slow.request({ ":path": "/clusters/m1/openapi/v2", authorization: `Bearer ${token}` });
    req.on("error", () => {});
    req.pause();
    return req;
  });
  await until("the slow reader's responses began", async () =>
    held.every((r) => r.sentHeaders !== undefined),
  );
  t.ok(await othersServed(), "another caller is served while the windows are held");
  slow.destroy();
  // Its quota slots come back once its connection is gone.
  const session = await h2();
  t.teardown(() => session.close());
  await until("the slow reader's slots are back", async () => {
    const answers = await Promise.all(
      Array.from({ length: MAX_STREAMS }, () => get(session, "/clusters/m1/version", token)),
    );
    return answers.every((a) => a.status === 200);
  });
  t.pass("the same caller holds its quota again");
});

t.test("idle timeout: an h2 connection without streams is closed, a quiet watch is not", async (t) => {
  const idle = await h2();
  const closed = new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 15_000);
    idle.once("close", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
  t.ok(await closed, "the connection with no stream was closed");

  // The request handler lifts the socket timeout of HTTP/1.1 while a request is in flight; on h2 that
  // is the session's, so what closes an h2 connection idle after its requests is the stream count.
  const used = await h2();
  t.equal((await get(used, "/clusters/m1/version", token)).status, 200, "a request on a fresh connection");
  const usedClosed = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 15_000);
    used.once("close", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
  t.ok(usedClosed, "the connection idle after its request was closed");

  const session = await h2();
  t.teardown(() => session.destroy());
  const watch = session.request({
    ":path": "/clusters/m1/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=60",
    authorization: `Bearer ${token}`,
  });
  let seen = "";
  watch.setEncoding("utf8");
  watch.on("data", (c: string) => {
    seen += c;
  });
  await new Promise((r) => watch.once("response", r));
  // Several idle timeouts with no byte on the watch.
  await new Promise((r) => setTimeout(r, 3_500));
  t.notOk(session.closed || session.destroyed, "the watch's connection is still open");
  await member.api("POST", "/api/v1/namespaces/default/configmaps", {
    metadata: { name: "h2-quiet-watch" },
    data: {},
  });
  await until("the watch delivers the event", async () => seen.includes("h2-quiet-watch"));
  t.pass("the quiet watch got its event");
});

t.test("requests h2 has no place for get an answer, not a crash", async (t) => {
  const session = await h2();
  t.teardown(() => session.destroy());
  const connect = await new Promise<number>((resolve) => {
    const req = session.request({ ":method": "CONNECT", ":authority": "example.com:443" });
    req.on("response", (h) => resolve(Number(h[":status"])));
    req.on("error", () => resolve(-1));
    req.end();
  });
  t.ok(connect >= 400 || connect === -1, `CONNECT is refused (${connect})`);
  const star = await get(session, "/clusters/m1/version?x=" + "%".repeat(3), token);
  t.ok(star.status >= 200, `a malformed query gets an answer (${star.status})`);
  t.ok(await othersServed(), "another caller is served");
});

t.test("request timeout: a request body that never ends gets 408", async (t) => {
  const session = await h2();
  t.teardown(() => session.close());
  const req = session.request({
    ":method": "POST",
    ":path": "/clusters/m1/api/v1/namespaces/default/configmaps",
    authorization: `Bearer ${token}`,
    "content-type": "application/json",
  });
  req.write('{"metadata":');
  const status = await new Promise<number>((resolve) => {
    // A liveness bound, far above the 1 s request timeout.
    const timer = setTimeout(() => resolve(-2), 15_000);
    req.on("response", (h) => resolve(Number(h[":status"])));
    req.on("error", () => resolve(-1));
    req.on("close", () => resolve(-1));
    req.once("close", () => clearTimeout(timer));
  });
  t.equal(status, 408, "408 once the request timeout passed");
  req.resume();
  t.ok(await othersServed(), "another caller is served");
});

t.test("the per-source connection limit counts h2 connections", async (t) => {
  const small = await startTether({ limits: { maxConnectionsPerSource: 2 } });
  t.teardown(() => small.stop());
  const held = [await h2(small), await h2(small)];
  const third = await new Promise<"closed" | "served">((resolve) => {
    const session = h2connect(small.server.url, { ca: small.ca.certPem });
    session.on("error", () => {});
    session.once("close", () => resolve("closed"));
    session.once("connect", () => {
      const req = session.request({ ":path": "/healthz" });
      req.on("error", () => {});
      req.on("response", () => {
        resolve("served");
        session.destroy();
      });
      req.end();
    });
  });
  t.equal(third, "closed", "a third h2 connection from the same address is closed");
  held[0]!.destroy();
  await until("a slot is free again", async () => {
    const session = await h2(small).catch(() => undefined);
    if (!session) return false;
    const ok = await get(session, "/healthz")
      .then((r) => r.status === 200)
      .catch(() => false);
    session.destroy();
    return ok;
  });
  t.pass("once one closes, a new h2 connection is served");
  held[1]!.destroy();
});
