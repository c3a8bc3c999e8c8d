// Choosing the proxy (flag over environment, lower case over upper, the
// scheme's variable, NO_PROXY) and the CONNECT dialer's refusals: each is a
// coded error naming the proxy as scheme://host:port, never its password.
// The proxies here are raw sockets that answer one fixed reply; the agent
// through a real proxy (tinyproxy) is test/e2e/agent-proxy.test.ts.
import "reflect-metadata";
import { request as httpsRequest, createServer as createHttpsServer } from "node:https";
import { connect as netConnect, createServer, type Server, type Socket } from "node:net";
import t, { type Test } from "tap";
import {
  ERR_PROXY_AUTH,
  ERR_PROXY_FORBIDDEN,
  ERR_PROXY_REFUSED,
  ERR_PROXY_TIMEOUT,
  ERR_PROXY_UNREACHABLE,
  ERR_PROXY_URL,
  connectThrough,
  openTunnel,
  parseProxyUrl,
  proxyFor,
} from "../src/egress-proxy.js";
import { makeCert } from "./lib/certs.js";

const server = new URL("https://tether.example.com:8443");

t.test("which proxy applies", async (t) => {
  t.equal(proxyFor(server, undefined, {}), undefined, "none set: direct");
  t.equal(proxyFor(server, undefined, { HTTPS_PROXY: "http://up:1" })?.display, "http://up:1");
  t.equal(proxyFor(server, undefined, { https_proxy: "http://low:1" })?.display, "http://low:1");
  t.equal(
    proxyFor(server, undefined, { https_proxy: "http://low:1", HTTPS_PROXY: "http://up:1" })?.display,
    "http://low:1",
    "lower case wins",
  );
  t.equal(
    proxyFor(server, undefined, { https_proxy: " ", HTTPS_PROXY: "http://up:1" })?.display,
    "http://up:1",
    "an empty variable counts as unset",
  );
  t.equal(
    proxyFor(server, undefined, { HTTP_PROXY: "http://plain:1" }),
    undefined,
    "HTTP_PROXY is not for an https server",
  );
  t.equal(
    proxyFor(new URL("http://tether.example.com"), undefined, { HTTP_PROXY: "http://plain:1" })?.display,
    "http://plain:1",
    "but for an http one",
  );
  t.equal(
    proxyFor(server, "http://flag:3128", { HTTPS_PROXY: "http://up:1" })?.display,
    "http://flag:3128",
    "--proxy replaces the environment",
  );
  t.equal(
    proxyFor(server, "http://flag:3128", { NO_PROXY: ".example.com" }),
    undefined,
    "NO_PROXY applies to --proxy",
  );
  t.equal(
    proxyFor(server, undefined, { HTTPS_PROXY: "http://up:1", no_proxy: "other.org", NO_PROXY: "*" })
      ?.display,
    "http://up:1",
    "no_proxy wins over NO_PROXY",
  );
  t.equal(
    proxyFor(server, undefined, { HTTPS_PROXY: "http://up:1", NO_PROXY: "tether.example.com:443" })?.display,
    "http://up:1",
    "a NO_PROXY port is the server's port",
  );
  t.equal(
    proxyFor(server, undefined, { HTTPS_PROXY: "http://up:1", NO_PROXY: "tether.example.com:8443" }),
    undefined,
  );
  t.equal(
    proxyFor(new URL("https://tether.example.com"), undefined, {
      HTTPS_PROXY: "http://up:1",
      NO_PROXY: "tether.example.com:443",
    }),
    undefined,
    "the default port counts",
  );
});

t.test("proxy URLs", async (t) => {
  const p = parseProxyUrl("http://us%40er:p%3Ass@proxy.corp:3128", "HTTPS_PROXY");
  t.equal(p.display, "http://proxy.corp:3128", "printed without the userinfo");
  t.equal(p.authorization, `Basic ${Buffer.from("us@er:p:ss").toString("base64")}`, "percent-decoded");
  t.equal(parseProxyUrl("proxy.corp:3128", "x").display, "http://proxy.corp:3128", "no scheme: http");
  t.equal(parseProxyUrl("http://proxy.corp", "x").port, 80);
  t.equal(parseProxyUrl("https://proxy.corp", "x").display, "https://proxy.corp:443");
  t.equal(parseProxyUrl("http://[::1]:3128", "x").hostname, "::1");
  t.equal(parseProxyUrl("http://proxy.corp:3128", "x").authorization, undefined);
  for (const bad of [
    "socks5://u:secret@proxy:1080",
    "http://u:secret@",
    "http://u:secret@[bad",
    "http://u:sec%ret@proxy:3128",
  ]) {
    try {
      parseProxyUrl(bad, "HTTPS_PROXY");
      t.fail(`${bad} accepted`);
    } catch (err) {
      t.equal((err as { code: string }).code, ERR_PROXY_URL, bad);
      t.notMatch((err as Error).message, /secret/, "the message does not repeat the password");
      t.match((err as Error).message, /HTTPS_PROXY/, "it names where the URL came from");
    }
  }
});

/** A "proxy" on loopback that answers each connection with `reply` (or nothing). */
async function fakeProxy(t: Test, reply: string | undefined): Promise<{ port: number; heads: string[] }> {
  const heads: string[] = [];
  const srv: Server = createServer((s: Socket) => {
    let head = "";
    s.on("data", (c) => {
      head += c.toString("latin1");
      if (head.includes("\r\n\r\n")) {
        heads.push(head);
        if (reply !== undefined) s.end(reply);
      }
    });
    s.on("error", () => {});
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())));
  return { port: (srv.address() as { port: number }).port, heads };
}

async function refusal(
  t: Test,
  proxyUrl: string,
  timeoutMs = 5_000,
): Promise<{ code: string; message: string }> {
  try {
    const s = await openTunnel(parseProxyUrl(proxyUrl, "--proxy"), "tether.example.com", 8443, timeoutMs);
    s.destroy();
    t.fail("the tunnel opened");
    return { code: "", message: "" };
  } catch (err) {
    const e = err as { code: string; message: string };
    t.notMatch(e.message, /secret/, "no password in the message");
    t.notMatch(e.message, /\n/, "one line");
    return e;
  }
}

t.test("CONNECT refusals are coded and name the proxy", async (t) => {
  const p407 = await fakeProxy(
    t,
    'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="x"\r\n\r\n',
  );
  let e = await refusal(t, `http://127.0.0.1:${p407.port}`);
  t.equal(e.code, ERR_PROXY_AUTH);
  t.match(e.message, `http://127.0.0.1:${p407.port}`);
  t.match(e.message, /user:password@/, "says how to give credentials");
  e = await refusal(t, `http://bob:secret@127.0.0.1:${p407.port}`);
  t.equal(e.code, ERR_PROXY_AUTH);
  t.match(e.message, /refused the credentials/);
  t.match(p407.heads[1], `Proxy-Authorization: Basic ${Buffer.from("bob:secret").toString("base64")}\r\n`);
  t.match(
    p407.heads[1],
    /^CONNECT tether\.example\.com:8443 HTTP\/1\.1\r\nHost: tether\.example\.com:8443\r\n/,
  );
  t.notMatch(p407.heads[0], /Proxy-Authorization/, "no credentials: no header");

  const p401 = await fakeProxy(t, "HTTP/1.1 401 Unauthorized\r\n\r\n");
  e = await refusal(t, `http://bob:secret@127.0.0.1:${p401.port}`);
  t.equal(e.code, ERR_PROXY_AUTH, "a 401 to CONNECT is the proxy's too");

  const p403 = await fakeProxy(t, "HTTP/1.0 403 Forbidden\r\n\r\n");
  e = await refusal(t, `http://127.0.0.1:${p403.port}`);
  t.equal(e.code, ERR_PROXY_FORBIDDEN);
  t.match(e.message, /tether\.example\.com:8443/, "names the destination");

  const p502 = await fakeProxy(t, "HTTP/1.1 502 Bad\x01Gateway\r\n\r\n");
  e = await refusal(t, `http://127.0.0.1:${p502.port}`);
  t.equal(e.code, ERR_PROXY_REFUSED);
  t.match(e.message, /502 Bad Gateway/, "the reason, without control characters");

  const notHttp = await fakeProxy(t, "SSH-2.0-OpenSSH\r\n\r\n");
  e = await refusal(t, `http://127.0.0.1:${notHttp.port}`);
  t.equal(e.code, ERR_PROXY_REFUSED);
  t.match(e.message, /not answer CONNECT in HTTP/);

  const hangsUp = await fakeProxy(t, "");
  e = await refusal(t, `http://127.0.0.1:${hangsUp.port}`);
  t.equal(e.code, ERR_PROXY_REFUSED);
  t.match(e.message, /closed the connection/);

  const endless = await fakeProxy(t, `HTTP/1.1 200 OK\r\nX: ${"a".repeat(20_000)}`);
  e = await refusal(t, `http://127.0.0.1:${endless.port}`);
  t.equal(e.code, ERR_PROXY_REFUSED, "an answer head is bounded");

  const silent = await fakeProxy(t, undefined);
  e = await refusal(t, `http://127.0.0.1:${silent.port}`, 300);
  t.equal(e.code, ERR_PROXY_TIMEOUT);

  // A port nothing listens on: the one just closed.
  const gone = await fakeProxy(t, undefined);
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const closedPort = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  e = await refusal(t, `http://u:secret@127.0.0.1:${closedPort}`);
  t.equal(e.code, ERR_PROXY_UNREACHABLE);
  t.match(e.message, `http://127.0.0.1:${closedPort}`);
  t.match(e.message, /ECONNREFUSED/);
  t.ok(gone.port);
});

t.test("a 200 hands over the socket; data right after the answer is refused", async (t) => {
  const early = await fakeProxy(t, "HTTP/1.1 200 Connection established\r\n\r\nhello");
  const e = await refusal(t, `http://127.0.0.1:${early.port}`);
  t.equal(e.code, ERR_PROXY_REFUSED);
  t.match(e.message, /before TLS began/);

  const heads: string[] = [];
  const echo = createServer((s) => {
    s.once("data", (c) => {
      heads.push(c.toString("latin1"));
      s.write("HTTP/1.1 200 Connection established\r\n\r\n");
      s.pipe(s);
    });
    s.on("error", () => {});
  });
  await new Promise<void>((r) => echo.listen(0, "127.0.0.1", r));
  t.teardown(() => new Promise<void>((r) => echo.close(() => r())));
  const port = (echo.address() as { port: number }).port;
  const s = await openTunnel(parseProxyUrl(`http://127.0.0.1:${port}`, "x"), "::1", 443);
  s.write("ping");
  const back = await new Promise<string>((r) => s.once("data", (c: Buffer) => r(c.toString())));
  t.equal(back, "ping", "the tunnel carries bytes both ways");
  t.match(heads[0], /^CONNECT \[::1\]:443 HTTP\/1\.1\r\n/, "an IPv6 destination is bracketed");
  s.destroy();
});

t.test("an IP-literal server through the proxy: its certificate is checked against that IP", async (t) => {
  const ca = await makeCert({ cn: "proxy-test-ca", ca: true });
  const serving = await makeCert({ cn: "ip-only", issuer: ca, ip: "127.0.0.1" });
  const tlsServer = createHttpsServer({ key: serving.keyPem, cert: serving.certPem }, (_req, res) =>
    res.end("through"),
  );
  await new Promise<void>((r) => tlsServer.listen(0, "127.0.0.1", r));
  t.teardown(() => new Promise<void>((r) => tlsServer.close(() => r())));
  const tlsPort = (tlsServer.address() as { port: number }).port;
  const proxy = createServer((s) => {
    s.on("error", () => {});
    s.once("data", () => {
      const up = netConnect(tlsPort, "127.0.0.1", () => {
        s.write("HTTP/1.1 200 Connection established\r\n\r\n");
        s.pipe(up).pipe(s);
      });
      up.on("error", () => s.destroy());
    });
  });
  await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", r));
  t.teardown(() => new Promise<void>((r) => proxy.close(() => r())));
  // The proxy by name: without the server's host, TLS would check the certificate against the proxy's.
  const via = parseProxyUrl(`http://localhost:${(proxy.address() as { port: number }).port}`, "x");
  const body = await new Promise<string>((resolve, reject) => {
    const req = httpsRequest(
      {
        host: "127.0.0.1",
        port: tlsPort,
        ca: ca.certPem,
        agent: false,
        createConnection: connectThrough(via) as never,
      },
      (res) => {
        let text = "";
        res.on("data", (c: Buffer) => {
          text += c.toString();
        });
        res.on("end", () => resolve(text));
      },
    );
    req.on("error", reject);
    req.end();
  });
  t.equal(body, "through", 'not checked against "localhost"');
});
