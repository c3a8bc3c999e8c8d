// The forwarder against a fake apiserver (a local https server that asks for
// a client certificate and records what reaches it): passthrough never
// presents the agent's certificate or token, impersonation groups stay one
// header line each, an upgrade is spliced only after the matching 101, and a
// 101 to a plain request is answered 502 instead of hanging.
import "reflect-metadata";
import { once } from "node:events";
import { createServer as createHttpsServer } from "node:https";
import { connect, createServer as createNetServer, type Server, type Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import t from "tap";
import { Forwarder } from "../src/forwarder.js";
import type { KubeTarget } from "../src/kube-target.js";
import { makeCert } from "./lib/certs.js";

const ca = await makeCert({ cn: "fake-apiserver-ca", ca: true });
const serving = await makeCert({ cn: "fake-apiserver", issuer: ca, ip: "127.0.0.1" });
const agentCert = await makeCert({ cn: "agent-client", issuer: ca });

interface Seen {
  url: string;
  rawHeaders: string[];
  clientCert: boolean;
  /** Bytes that arrived on the connection after the request head. */
  after: Buffer[];
}
const seen: Seen[] = [];
const hadCert = (req: { socket: unknown }) =>
  Object.keys((req.socket as TLSSocket).getPeerCertificate?.() ?? {}).length > 0;

const upstream = createHttpsServer(
  { key: serving.keyPem, cert: serving.certPem, requestCert: true, rejectUnauthorized: false },
  (req, res) => {
    const s: Seen = { url: req.url ?? "", rawHeaders: req.rawHeaders, clientCert: hadCert(req), after: [] };
    seen.push(s);
    if (req.url === "/plain-101") {
      res.socket?.write(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
      );
      return;
    }
    if (req.url === "/plain-101-bare") {
      res.socket?.write("HTTP/1.1 101 Switching Protocols\r\n\r\n");
      return;
    }
    if (req.url?.startsWith("/hold")) {
      // A watch: the head now, the body whenever; the connection stays the request's.
      res.writeHead(200, { "content-type": "application/json" });
      res.flushHeaders();
      return;
    }
    res.setHeader("content-type", "text/plain");
    res.end("ok");
  },
);
upstream.on("upgrade", (req, socket: Socket, head: Buffer) => {
  const s: Seen = { url: req.url ?? "", rawHeaders: req.rawHeaders, clientCert: hadCert(req), after: [] };
  seen.push(s);
  if (head.length > 0) s.after.push(head);
  socket.on("data", (d: Buffer) => s.after.push(d));
  socket.on("error", () => {});
  if (req.url === "/up-ok") {
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${req.headers.upgrade}\r\nConnection: Upgrade\r\n\r\n`,
    );
    socket.on("data", (d: Buffer) => socket.write(Buffer.concat([Buffer.from("echo:"), d])));
  } else if (req.url === "/up-wrong") {
    socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n");
  } else {
    // What a Go apiserver does on a path that does not upgrade: answer and keep the connection.
    socket.write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\nversion");
  }
});
await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
t.teardown(() => upstream.close());

const target: KubeTarget = {
  url: new URL(`https://127.0.0.1:${(upstream.address() as { port: number }).port}`),
  tls: { ca: ca.certPem, cert: agentCert.certPem, key: agentCert.keyPem },
  authorization: () => "Bearer agent-token",
  description: "fake apiserver",
};
const forwarder = new Forwarder(target);
t.teardown(() => forwarder.close());

// Stand-ins for tunnel streams: TCP connections carrying the open metadata the forwarder reads.
const entrances: Record<string, Server> = {};
for (const auth of ["impersonate", "passthrough"] as const) {
  const srv = createNetServer((socket) => {
    (socket as unknown as { metadata: Record<string, string> }).metadata = { auth };
    forwarder.handle(socket);
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  entrances[auth] = srv;
  t.teardown(() => srv.close());
}

/** Sends raw bytes on a fresh stream, returns all that came back until the stream closed (bounded). */
async function exchange(
  auth: "impersonate" | "passthrough",
  text: string,
  opts: { afterHead?: string; limitMs?: number } = {},
): Promise<{ text: string; closed: boolean }> {
  const sock = connect((entrances[auth]!.address() as { port: number }).port, "127.0.0.1");
  await once(sock, "connect");
  let got = "";
  sock.setEncoding("utf8");
  sock.on("data", (d: string) => {
    got += d;
    if (opts.afterHead && got.includes("\r\n\r\n")) {
      sock.write(opts.afterHead);
      opts.afterHead = undefined;
    }
  });
  sock.on("error", () => {});
  sock.write(text);
  const closed = await Promise.race([
    once(sock, "close").then(() => true),
    new Promise<boolean>((r) => setTimeout(() => r(false), opts.limitMs ?? 5_000)),
  ]);
  sock.destroy();
  return { text: got, closed };
}

const lastSeen = (url: string) => [...seen].reverse().find((s) => s.url === url);
const headerValues = (s: Seen | undefined, name: string) =>
  (s?.rawHeaders ?? []).filter((_v, i, a) => i % 2 === 1 && a[i - 1]!.toLowerCase() === name);

t.test(
  "300 watches at once all reach the apiserver (its pool held 256: the rest waited for one to end)",
  async (t) => {
    const port = (entrances.passthrough!.address() as { port: number }).port;
    const socks = Array.from({ length: 300 }, (_, i) => {
      const sock = connect(port, "127.0.0.1");
      sock.on("error", () => {});
      sock.write(`GET /hold-${i}?watch=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer caller\r\n\r\n`);
      return sock;
    });
    t.teardown(() => {
      for (const s of socks) s.destroy();
    });
    const held = () => seen.filter((s) => s.url.startsWith("/hold-")).length;
    const deadline = Date.now() + 20_000;
    while (held() < 300 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    t.equal(held(), 300);
  },
);

t.test("passthrough presents neither the agent's certificate nor its token", async (t) => {
  const plain = await exchange(
    "passthrough",
    "GET /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer caller\r\nConnection: close\r\n\r\n",
  );
  t.match(plain.text, /^HTTP\/1\.1 200/);
  t.equal(lastSeen("/echo")?.clientCert, false, "plain: no client certificate");
  t.same(headerValues(lastSeen("/echo"), "authorization"), ["Bearer caller"]);

  const up = await exchange(
    "passthrough",
    "GET /up-ok HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer caller\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    { limitMs: 500 },
  );
  t.match(up.text, /^HTTP\/1\.1 101/);
  t.equal(lastSeen("/up-ok")?.clientCert, false, "upgrade: no client certificate");
  t.same(headerValues(lastSeen("/up-ok"), "authorization"), ["Bearer caller"]);
});

t.test("impersonate mode presents the agent's certificate and token", async (t) => {
  const plain = await exchange(
    "impersonate",
    "GET /echo HTTP/1.1\r\nHost: x\r\nImpersonate-User: tether:a\r\nAuthorization: Bearer caller\r\nConnection: close\r\n\r\n",
  );
  t.match(plain.text, /^HTTP\/1\.1 200/);
  t.equal(lastSeen("/echo")?.clientCert, true);
  t.same(headerValues(lastSeen("/echo"), "authorization"), ["Bearer agent-token"]);
  const up = await exchange(
    "impersonate",
    "POST /up-ok HTTP/1.1\r\nHost: x\r\nImpersonate-User: tether:a\r\nContent-Length: 0\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n",
    { afterHead: "ping", limitMs: 1_000 },
  );
  t.match(up.text, /^HTTP\/1\.1 101[\s\S]*\r\n\r\necho:ping$/, "spliced after the 101, both ways");
  t.equal(lastSeen("/up-ok")?.clientCert, true);
  t.same(
    headerValues(lastSeen("/up-ok"), "content-length"),
    ["0"],
    "a POST upgrade has an empty body, not chunks",
  );
});

t.test("one Impersonate-Group line per group reaches the apiserver", async (t) => {
  const groups =
    "Impersonate-Group: tether:a\r\nImpersonate-Group: tether:b\r\nImpersonate-Group: tether:c\r\n";
  await exchange(
    "impersonate",
    `GET /echo HTTP/1.1\r\nHost: x\r\nImpersonate-User: tether:u\r\n${groups}Connection: close\r\n\r\n`,
  );
  t.same(headerValues(lastSeen("/echo"), "impersonate-group"), ["tether:a", "tether:b", "tether:c"], "plain");
  await exchange(
    "impersonate",
    `GET /up-ok HTTP/1.1\r\nHost: x\r\nImpersonate-User: tether:u\r\n${groups}Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
    { limitMs: 500 },
  );
  t.same(
    headerValues(lastSeen("/up-ok"), "impersonate-group"),
    ["tether:a", "tether:b", "tether:c"],
    "upgrade",
  );
});

t.test("a 101 to a plain request is answered 502, not left hanging", async (t) => {
  for (const path of ["/plain-101", "/plain-101-bare"]) {
    for (const auth of ["impersonate", "passthrough"] as const) {
      const r = await exchange(
        auth,
        `GET ${path} HTTP/1.1\r\nHost: x\r\nImpersonate-User: tether:u\r\nAuthorization: Bearer c\r\nConnection: close\r\n\r\n`,
      );
      t.match(r.text, /^HTTP\/1\.1 502/, `${path} ${auth}`);
      t.match(r.text, /"reason":"BadGateway"/);
    }
  }
});

t.test("an upgrade the apiserver does not make is answered and closed, never piped", async (t) => {
  for (const auth of ["impersonate", "passthrough"] as const) {
    const smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    const head = `GET /version HTTP/1.1\r\nHost: x\r\nImpersonate-User: tether:u\r\nAuthorization: Bearer c\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`;
    const before = seen.length;
    const r = await exchange(auth, head + smuggled, { afterHead: smuggled });
    t.ok(r.closed, `${auth}: the stream is closed after the answer`);
    t.match(r.text, /^HTTP\/1\.1 200 OK\r\n/, "the apiserver's answer is relayed");
    t.match(r.text, /\r\nConnection: close\r\n/i);
    t.match(r.text, /\r\n\r\nversion$/, "exactly its body, nothing after");
    const mine = seen.slice(before).find((s) => s.url === "/version");
    t.same(mine?.after.map(String) ?? [], [], "no byte after the request head reached the apiserver");
    t.notOk(
      seen.some((s) => s.url === "/smuggled"),
      "the pipelined request was never seen",
    );
  }
});

t.test("only websocket and SPDY/3.1 upgrades; a 101 to another protocol is refused", async (t) => {
  for (const token of ["h2c", "foo", "websocket, h2c"]) {
    const r = await exchange(
      "impersonate",
      `GET /up-ok HTTP/1.1\r\nHost: x\r\nImpersonate-User: tether:u\r\nConnection: Upgrade\r\nUpgrade: ${token}\r\n\r\n`,
    );
    t.match(r.text, /^HTTP\/1\.1 400/, token);
    t.ok(r.closed);
  }
  const wrong = await exchange(
    "impersonate",
    "GET /up-wrong HTTP/1.1\r\nHost: x\r\nImpersonate-User: tether:u\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
  );
  t.match(wrong.text, /^HTTP\/1\.1 502/);
  t.ok(wrong.closed);
});

t.test(
  "a chunked body keeps its framing: a request hidden in a GET's body never reaches the apiserver",
  async (t) => {
    const hidden = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    const chunk = `${Buffer.byteLength(hidden).toString(16)}\r\n${hidden}\r\n0\r\n\r\n`;
    for (const auth of ["impersonate", "passthrough"] as const) {
      const reply = await exchange(
        auth,
        "GET /chunked HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer caller\r\nImpersonate-User: tether:alice\r\n" +
          `Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n${chunk}`,
      );
      t.match(reply.text, /^HTTP\/1\.1 200/, `${auth}: the GET is answered`);
      // A second request on the kept-alive upstream connection would arrive right behind the first.
      await new Promise((r) => setTimeout(r, 300));
      t.equal(lastSeen("/smuggled"), undefined, `${auth}: the hidden request was never parsed as one`);
      t.same(
        headerValues(lastSeen("/chunked"), "transfer-encoding"),
        ["chunked"],
        `${auth}: framed as chunked`,
      );
    }
  },
);
