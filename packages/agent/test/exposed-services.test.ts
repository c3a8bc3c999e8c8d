// --expose parsing, the path rules that keep a request under the service's
// base path, and the forwarder against a real loopback HTTP service, fed raw
// HTTP over a real socket standing in for a tunnel stream: the caller's
// credentials and Host never reach the service, its cookies and redirects are
// not acted on, upgrades and CONNECT are refused.
import "reflect-metadata";
import { once } from "node:events";
import { createServer, type IncomingMessage } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { connect, createServer as createNetServer, type Socket } from "node:net";
import t from "tap";
import { duplicateNames, ExposedServices, parseExpose, upstreamPath } from "../src/exposed-services.js";
import { makeCert } from "./lib/certs.js";

t.test("parseExpose", async (t) => {
  const s = parseExpose("ks-apiserver=http://ks-apiserver.kubesphere-system.svc:80");
  t.equal(s.name, "ks-apiserver");
  t.equal(s.url.host, "ks-apiserver.kubesphere-system.svc");
  t.equal(s.base, "");
  t.equal(parseExpose("p=https://prom:9090/base/").base, "/base");
  t.equal(
    parseExpose("p=http://prom/a/%2e%2e/b").base,
    "/b",
    "the URL's own dot segments are resolved once, here",
  );
  for (const [bad, why] of [
    ["noequals", /NAME=URL/],
    ["UPPER=http://x", /NAME=URL/],
    [`${"a".repeat(56)}=http://x`, /NAME=URL/],
    ["x=ftp://host/", /http:\/\/ or https:\/\//],
    ["x=http://user:pw@host/", /credentials/],
    ["x=http://host/?q=1", /query/],
    ["x=http://host/#f", /fragment/],
    ["x=not a url", /not a URL/],
  ] as const) {
    t.throws(() => parseExpose(bad), why, bad);
  }
  t.same(duplicateNames([parseExpose("a=http://x"), parseExpose("b=http://y"), parseExpose("a=http://z")]), [
    "a",
  ]);
});

t.test("upstreamPath keeps requests under the base path", async (t) => {
  t.same(upstreamPath("", "/"), { path: "/" });
  t.same(upstreamPath("/base", "/"), { path: "/base/" });
  t.same(upstreamPath("/base", "/a/b?x=../y"), { path: "/base/a/b?x=../y" }, "a query is not a path");
  t.same(upstreamPath("/base", "/a%20b"), { path: "/base/a%20b" }, "encoding is passed on as is");
  for (const target of [
    "http://evil:1/x",
    "evil:1",
    "*",
    "//evil/x",
    "/..",
    "/a/../../etc",
    "/a/./b",
    "/%2e%2e/x",
    "/%2E%2E/x",
    "/..%2fx",
    "/%252e%252e/x",
    "/a\\..\\b",
    "/..;/x",
    "/a%00b",
    "/%zz",
  ]) {
    const r = upstreamPath("/base", target);
    t.ok("refusal" in r, `${target} refused`);
  }
});

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  rawHeaders: string[];
  body: string;
}
const seen: Seen[] = [];
const service = createServer((req, res) => {
  let body = "";
  req.setEncoding("utf8");
  req.on("data", (c: string) => (body += c));
  req.on("end", () => {
    seen.push({
      method: req.method ?? "",
      url: req.url ?? "",
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      body,
    });
    if (req.url === "/base/redirect") {
      res.writeHead(302, { location: "http://169.254.169.254/latest/meta-data/" }).end();
      return;
    }
    res.writeHead(200, { "content-type": "text/plain", "set-cookie": "session=planted" });
    res.end(`${req.method} ${req.url} ${body}`);
  });
});
service.listen(0, "127.0.0.1");
await once(service, "listening");
const port = (service.address() as { port: number }).port;
t.teardown(() => service.close());

const exposed = new ExposedServices([parseExpose(`svc=http://127.0.0.1:${port}/base`)]);
t.teardown(() => exposed.close());
t.same(exposed.streamNames(), ["service:svc"]);

// Each connection to this listener is handed to the forwarder as a stream of `service`.
let streamService = "service:svc";
const tunnel = createNetServer((socket) => {
  Object.assign(socket, { service: streamService });
  exposed.handle(socket);
});
tunnel.listen(0, "127.0.0.1");
await once(tunnel, "listening");
t.teardown(() => tunnel.close());

/** Sends `raw` on a fresh stream and returns everything answered until the stream closes. */
async function exchange(raw: string): Promise<string> {
  const socket: Socket = connect((tunnel.address() as { port: number }).port, "127.0.0.1");
  await once(socket, "connect");
  socket.write(raw);
  let answer = "";
  socket.setEncoding("utf8");
  socket.on("data", (c: string) => {
    answer += c;
    // One response is all a test wants: stop at its end.
    if (/\r\n\r\n/.test(answer) && /content-length: (\d+)/i.test(answer)) {
      const length = Number(/content-length: (\d+)/i.exec(answer)![1]);
      if (answer.length >= answer.indexOf("\r\n\r\n") + 4 + length) socket.end();
    }
  });
  await Promise.race([once(socket, "close"), new Promise((r) => setTimeout(r, 5_000))]);
  socket.destroy();
  return answer;
}

t.test(
  "a request reaches the configured host and base path with the identity, not the caller's credentials",
  async (t) => {
    seen.length = 0;
    const answer = await exchange(
      "POST /echo?x=1 HTTP/1.1\r\nHost: evil.example:6443\r\nAuthorization: Bearer caller-secret\r\n" +
        "Cookie: tether=secret\r\nX-Tether-User: alice\r\nX-Tether-Group: devs\r\nX-Tether-Group: ops\r\n" +
        "Content-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    t.match(answer, /^HTTP\/1\.1 200/);
    t.match(answer, /POST \/base\/echo\?x=1 hello/);
    t.notMatch(answer, /set-cookie/i, "the service's cookies stay off Tether's origin");
    const got = seen[0]!;
    t.equal(got.headers.host, `127.0.0.1:${port}`, "Host is the configured one");
    t.equal(got.headers.authorization, undefined);
    t.equal(got.headers.cookie, undefined);
    t.equal(got.headers["x-tether-user"], "alice");
    t.same(
      got.rawHeaders.filter((_, i, a) => i % 2 === 1 && a[i - 1]!.toLowerCase() === "x-tether-group"),
      ["devs", "ops"],
      "one header per group",
    );
  },
);

t.test("a redirect is relayed, not followed", async (t) => {
  seen.length = 0;
  const answer = await exchange("GET /redirect HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  t.match(answer, /^HTTP\/1\.1 302/);
  t.match(answer, /location: http:\/\/169\.254\.169\.254\/latest\/meta-data\//i);
  t.equal(seen.length, 1, "the service alone was asked");
});

t.test(
  "path tricks, absolute form, upgrades and CONNECT are refused before the service sees them",
  async (t) => {
    seen.length = 0;
    for (const target of ["/%2e%2e/secret", "/a/../../secret", "http://127.0.0.1:1/x"]) {
      const answer = await exchange(`GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      t.match(answer, /^HTTP\/1\.1 400/, target);
      t.match(answer, /"kind":"Status"/);
    }
    const up = await exchange(
      "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    t.match(up, /^HTTP\/1\.1 400/);
    t.match(up, /upgrades are refused/);
    const tunnelled = await exchange(
      "CONNECT 169.254.169.254:80 HTTP/1.1\r\nHost: 169.254.169.254:80\r\n\r\n",
    );
    t.match(tunnelled, /^HTTP\/1\.1 400/);
    t.match(tunnelled, /CONNECT is refused/);
    t.equal(seen.length, 0, "nothing reached the service");
  },
);

t.test("a stream for a service not exposed gets 404, and an unreachable service 502", async (t) => {
  streamService = "service:other";
  const answer = await exchange("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  t.match(answer, /^HTTP\/1\.1 404/);
  streamService = "service:svc";
  const closed = createServer();
  closed.listen(0, "127.0.0.1");
  await once(closed, "listening");
  const deadPort = (closed.address() as { port: number }).port;
  closed.close();
  const dead = new ExposedServices([parseExpose(`svc=http://127.0.0.1:${deadPort}`)]);
  const net2 = createNetServer((socket) => {
    Object.assign(socket, { service: "service:svc" });
    dead.handle(socket);
  });
  net2.listen(0, "127.0.0.1");
  await once(net2, "listening");
  const s = connect((net2.address() as { port: number }).port, "127.0.0.1");
  s.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  let text = "";
  s.setEncoding("utf8");
  s.on("data", (c: string) => (text += c));
  await once(s, "close");
  t.match(text, /^HTTP\/1\.1 502/);
  t.match(text, /exposed service \\"svc\\" could not be reached/);
  dead.close();
  net2.close();
});

t.test(
  "an https service is verified against --expose-ca (and Node's CAs), not trusted blindly",
  async (t) => {
    const ca = await makeCert({ cn: "in-cluster-ca", ca: true });
    const serving = await makeCert({ cn: "svc", issuer: ca, ip: "127.0.0.1" });
    const tlsService = createHttpsServer({ key: serving.keyPem, cert: serving.certPem }, (_req, res) =>
      res.end("over tls"),
    );
    const tlsPort = await new Promise<number>((resolve) =>
      tlsService.listen(0, "127.0.0.1", () => resolve((tlsService.address() as { port: number }).port)),
    );
    t.teardown(() => tlsService.close());
    const ask = async (exposedTls: ExposedServices) => {
      const listener = createNetServer((socket) => {
        Object.assign(socket, { service: "service:tls" });
        exposedTls.handle(socket);
      });
      await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", () => resolve()));
      const s = connect((listener.address() as { port: number }).port, "127.0.0.1");
      s.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
      let text = "";
      s.setEncoding("utf8");
      s.on("data", (c: string) => (text += c));
      await once(s, "close");
      listener.close();
      exposedTls.close();
      return text;
    };
    const url = `tls=https://127.0.0.1:${tlsPort}`;
    const trusted = await ask(new ExposedServices([parseExpose(url)], { ca: ca.certPem }));
    t.match(trusted, /^HTTP\/1\.1 200/);
    t.match(trusted, /over tls/);
    const untrusted = await ask(new ExposedServices([parseExpose(url)]));
    t.match(untrusted, /^HTTP\/1\.1 502/);
    t.match(untrusted, /could not be reached/);
  },
);
