// The server's upgrade relay against a scripted upstream (a TCP server playing
// the agent's stream): it waits for the answer, splices only after a 101 to
// the protocol asked for, relays anything else as a closing response, and
// never forwards a byte the caller sent after the head before the switch.
import { once } from "node:events";
import { createServer as createHttpServer } from "node:http";
import { connect, createServer as createNetServer, type Socket } from "node:net";
import t from "tap";
import { AuditLog } from "../../src/observe/audit-log.js";
import { checkUpgrade, relayUpgrade } from "../../src/proxy/upgrade-relay.js";

interface Conn {
  received: string;
}
const conns: Conn[] = [];
const REPLIES: Record<string, string> = {
  "/plain": "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nKeep-Alive: timeout=5\r\n\r\nversion",
  "/chunked": "HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nno!\r\n0\r\n\r\n",
  "/switch":
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\nConnection: Upgrade\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n",
  "/wrong": "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
  "/bare": "HTTP/1.1 101 Switching Protocols\r\n\r\n",
};
const upstream = createNetServer((sock: Socket) => {
  const c: Conn = { received: "" };
  conns.push(c);
  let answered = false;
  sock.on("error", () => {});
  sock.on("data", (d: Buffer) => {
    c.received += d.toString("latin1");
    if (answered) {
      if (c.received.includes("/switch")) sock.write(`echo:${d}`);
      return;
    }
    const path = /^[A-Z]+ (\S+) /.exec(c.received)?.[1] ?? "";
    if (!c.received.includes("\r\n\r\n")) return;
    answered = true;
    sock.write(REPLIES[path] ?? "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
  });
});
await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
t.teardown(() => upstream.close());
const upstreamPort = (upstream.address() as { port: number }).port;

// The relay's audit hooks, through the real audit log.
const auditLines: Record<string, unknown>[] = [];
const auditLog = new AuditLog({
  write: (line) => auditLines.push(JSON.parse(line) as Record<string, unknown>),
  reopen: () => {},
  close: async () => {},
});

const front = createHttpServer();
front.on("upgrade", (req, socket, head) => {
  const check = checkUpgrade(req);
  if (!check.ok) {
    socket.end(`HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    return;
  }
  relayUpgrade({
    audit: auditLog.upgrade(req, socket),
    socket,
    head,
    method: req.method ?? "GET",
    path: req.url ?? "/",
    headers: [["Host", "member"]],
    protocol: check.protocol,
    open: () => connect(req.headers["x-port"] ? Number(req.headers["x-port"]) : upstreamPort, "127.0.0.1"),
    failure: (err) => ["ServiceUnavailable", `no agent: ${err.message}`],
  });
});
await new Promise<void>((r) => front.listen(0, "127.0.0.1", r));
t.teardown(() => front.close());

async function call(text: string, afterHead?: string): Promise<{ text: string; closed: boolean }> {
  const sock = connect((front.address() as { port: number }).port, "127.0.0.1");
  await once(sock, "connect");
  let got = "";
  sock.setEncoding("latin1");
  sock.on("error", () => {});
  sock.on("data", (d: string) => {
    got += d;
    if (afterHead && got.includes("\r\n\r\n")) {
      sock.write(afterHead);
      afterHead = undefined;
    }
  });
  sock.write(text);
  const closed = await Promise.race([
    once(sock, "close").then(() => true),
    new Promise<boolean>((r) => setTimeout(() => r(false), 2_000)),
  ]);
  sock.destroy();
  return { text: got, closed };
}

const upgradeHead = (path: string, protocol = "SPDY/3.1", method = "POST") =>
  `${method} ${path} HTTP/1.1\r\nHost: tether\r\nConnection: Upgrade\r\nUpgrade: ${protocol}\r\n\r\n`;
const SMUGGLED = "GET /api/v1/secrets HTTP/1.1\r\nHost: x\r\n\r\n";

t.test(
  "an answer other than 101 is relayed with Connection: close; nothing after the head is forwarded",
  async (t) => {
    const before = conns.length;
    const r = await call(upgradeHead("/plain") + SMUGGLED, SMUGGLED);
    t.ok(r.closed, "the caller's connection is closed");
    t.match(r.text, /^HTTP\/1\.1 200 OK\r\n/);
    t.match(r.text, /\r\nConnection: close\r\n/);
    t.notMatch(r.text, /Keep-Alive/i, "hop-by-hop headers are not relayed");
    t.match(r.text, /\r\n\r\nversion$/);
    const seen = conns.slice(before).map((c) => c.received);
    t.equal(seen.length, 1);
    t.notMatch(seen[0] ?? "", /secrets/, "the pipelined request never left Tether");
    t.match(seen[0] ?? "", /\r\nContent-Length: 0\r\n/, "a POST upgrade is sent with an empty body");
    t.notMatch(seen[0] ?? "", /chunked/i);

    const chunked = await call(upgradeHead("/chunked") + SMUGGLED);
    t.ok(chunked.closed);
    t.match(chunked.text, /^HTTP\/1\.1 403 Forbidden\r\n/);
    t.match(chunked.text, /\r\n\r\nno!$/, "a chunked body arrives decoded, ended by the close");
  },
);

t.test("a 101 to the protocol asked for is spliced; early caller bytes follow it", async (t) => {
  const before = conns.length;
  const sock = connect((front.address() as { port: number }).port, "127.0.0.1");
  await once(sock, "connect");
  let got = "";
  sock.setEncoding("latin1");
  sock.on("data", (d: string) => {
    got += d;
  });
  sock.write(`${upgradeHead("/switch")}early`);
  const deadline = Date.now() + 2_000;
  while (!got.includes("echo:early") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.match(got, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
  t.match(got, /X-Stream-Protocol-Version: v4\.channel\.k8s\.io\r\n/, "the member's 101 headers are relayed");
  t.match(got, /echo:early$/, "the bytes sent with the head reached the member after the switch");
  sock.write("more");
  while (!got.includes("echo:more") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.match(got, /echo:more$/);
  sock.destroy();
  t.ok(conns[before]?.received.includes("\r\n\r\nearly"));
});

t.test("a 101 to another protocol, or to none, is a 502", async (t) => {
  for (const path of ["/wrong", "/bare"]) {
    const before = conns.length;
    const r = await call(upgradeHead(path) + SMUGGLED);
    t.match(r.text, /^HTTP\/1\.1 502 /, path);
    t.match(r.text, /"reason":"BadGateway"/);
    t.ok(r.closed);
    t.notMatch(conns[before]?.received ?? "", /secrets/);
  }
});

t.test("only websocket and SPDY/3.1 are relayed, without a body", async (t) => {
  for (const protocol of ["h2c", "foo", "websocket, h2c", "SPDY/3.1, websocket"]) {
    const r = await call(upgradeHead("/switch", protocol, "GET"));
    t.match(r.text, /^HTTP\/1\.1 400 /, protocol);
  }
  for (const protocol of ["websocket", "WebSocket", "spdy/3.1"]) {
    const r = await call(upgradeHead("/plain", protocol, "GET"));
    t.match(r.text, /^HTTP\/1\.1 200 /, `${protocol} is relayed`);
  }
  const withBody = await call(
    "POST /switch HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 5\r\n\r\nhello",
  );
  t.match(withBody.text, /^HTTP\/1\.1 400 /, "an upgrade with a body");
});

t.test("a stream that fails before any answer gets the caller a Status", async (t) => {
  const closed = createNetServer();
  await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r));
  const port = (closed.address() as { port: number }).port;
  await new Promise<void>((r) => closed.close(() => r()));
  const r = await call(
    `GET /x HTTP/1.1\r\nHost: t\r\nX-Port: ${port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
  );
  t.match(r.text, /^HTTP\/1\.1 503 /);
  t.match(r.text, /no agent: /);
  t.ok(r.closed);
});

t.test("the audit log learns each outcome; the caller gets the request id", async (t) => {
  const idOf = (text: string) => /\r\nX-Tether-Request-Id: ([0-9a-f-]{36})\r\n/.exec(text)?.[1];
  const lineOf = async (id: string | undefined, stage: string) => {
    for (let i = 0; i < 100; i++) {
      const line = auditLines.find((l) => l.requestId === id && l.stage === stage);
      if (line) return line;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`no ${stage} line for ${id}`);
  };
  const plain = await call(upgradeHead("/plain"));
  t.match(await lineOf(idOf(plain.text), "complete"), { kind: "upgrade", code: 200, bytesOut: 7 });

  const sock = connect((front.address() as { port: number }).port, "127.0.0.1");
  await once(sock, "connect");
  let got = "";
  sock.setEncoding("latin1");
  sock.on("data", (d: string) => (got += d));
  sock.write(`${upgradeHead("/switch")}early`);
  while (!got.includes("echo:early")) await new Promise((r) => setTimeout(r, 20));
  const id = idOf(got);
  t.match(
    await lineOf(id, "start"),
    { kind: "upgrade", verb: "post", code: 101 },
    "a start line at the switch",
  );
  sock.write("more");
  while (!got.includes("echo:more")) await new Promise((r) => setTimeout(r, 20));
  sock.destroy();
  t.match(
    await lineOf(id, "end"),
    { code: 101, bytesIn: "earlymore".length, bytesOut: "echo:earlyecho:more".length },
    "an end line with the bytes each way after the switch",
  );

  const closed = createNetServer();
  await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r));
  const port = (closed.address() as { port: number }).port;
  await new Promise<void>((r) => closed.close(() => r()));
  const before = auditLines.length;
  await call(
    `GET /x HTTP/1.1\r\nHost: t\r\nX-Port: ${port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
  );
  for (let i = 0; i < 100 && auditLines.length === before; i++) await new Promise((r) => setTimeout(r, 20));
  t.match(auditLines.at(-1), { stage: "complete", code: 503 }, "a failed stream: Tether's code");
});
