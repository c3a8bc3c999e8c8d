// A hostile agent that says it reads structured heads (HEAD.md) and answers
// plain requests with heads no honest agent sends. The server must bound what
// it buffers, refuse a malformed head with a 502 Status, never copy a header
// that frames the caller's connection, never let body bytes past a declared
// Content-Length reach a kept-alive caller as a second response, and keep
// serving. The head the server sends is checked too: the caller's credential
// and connection headers stay behind, Tether's impersonation goes along.
import "reflect-metadata";
import { once } from "node:events";
import type { Duplex } from "node:stream";
import { connect as tlsConnect } from "node:tls";
import {
  AGENT_FEATURES_HEADER,
  AGENT_PATH,
  encodeResponseHead,
  HEAD_FEATURE,
  type RequestHead,
  readRequestHead,
} from "@tether/common";
import { issueToken } from "@tether/server";
import { sessionFromWebSocket, WEBSOCKET_OPTIONS } from "@tether/tunnel";
import t from "tap";
import WebSocket from "ws";
import { type Fixture, startTether, TEST_TUNNEL, until } from "./fixture.js";

const tether: Fixture = await startTether();
t.teardown(() => tether.stop());
await tether.registerCluster("hostile");
const cert = await tether.ca.issueClusterCertificate("hostile");
await tether.store.recordIssued(cert.serial, "hostile", cert.notAfter.toISOString());

/** How the hostile agent answers the next request: the raw bytes after reading the head. */
let answer: (head: RequestHead) => Buffer = () =>
  Buffer.concat([encodeResponseHead({ status: 200, headers: [["Content-Length", "2"]] }), Buffer.from("ok")]);
let lastHead: RequestHead | undefined;
let headsOpened = 0;

const ws = new WebSocket(new URL(AGENT_PATH, tether.server.url).toString().replace(/^http/, "ws"), {
  ...WEBSOCKET_OPTIONS,
  ca: tether.ca.certPem,
  cert: cert.certPem,
  key: cert.keyPem!,
  headers: { [AGENT_FEATURES_HEADER]: HEAD_FEATURE },
});
await once(ws, "open");
const session = sessionFromWebSocket(ws, { ...TEST_TUNNEL, role: "client", accept: () => true });
t.teardown(() => session.close());
session.on("stream", (stream: Duplex & { metadata?: Record<string, string> }) => {
  stream.on("error", () => {});
  if (stream.metadata?.head !== "1") {
    stream.destroy();
    return;
  }
  headsOpened++;
  readRequestHead(stream).then(
    (head) => {
      lastHead = head;
      stream.resume();
      stream.end(answer(head));
    },
    () => stream.destroy(),
  );
});

const { token, hash } = issueToken();
await tether.store.addToken({
  hash,
  kind: "user",
  user: "alice",
  groups: ["admins"],
  clusters: ["hostile"],
  expiresAt: new Date(Date.now() + 3600_000).toISOString(),
});
const serverPort = Number(new URL(tether.server.url).port);

/** Writes `text` on a fresh TLS connection; collects what comes back until it closes or `limitMs` passes. */
async function raw(text: string, limitMs = 5_000): Promise<{ text: string; closed: boolean }> {
  const sock = tlsConnect({ host: "127.0.0.1", port: serverPort, ca: tether.ca.certPem });
  sock.on("error", () => {});
  await once(sock, "secureConnect");
  let got = "";
  sock.setEncoding("latin1");
  sock.on("data", (d: string) => (got += d));
  sock.write(text);
  const closed = await Promise.race([
    once(sock, "close").then(() => true),
    new Promise<boolean>((r) => setTimeout(() => r(false), limitMs)),
  ]);
  sock.destroy();
  return { text: got, closed };
}

const get = (extra = "", connection = "close") =>
  `GET /clusters/hostile/version HTTP/1.1\r\nHost: tether\r\nAuthorization: Bearer ${token}\r\n${extra}Connection: ${connection}\r\n\r\n`;
const framed = (json: string) => {
  const body = Buffer.from(json);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
};

await until("the hostile agent is connected", async () => /^HTTP\/1\.1 200/.test((await raw(get())).text));

t.test("the head the server sends carries Tether's identity, not the caller's", async (t) => {
  // A caller's own Impersonate-* is refused or checked on the member before anything is sent
  // (impersonation.test.ts); this head is about what Tether adds and drops itself.
  const r = await raw(get("X-Forwarded-For: 6.6.6.6\r\nKeep-Alive: 5\r\n"));
  t.match(r.text, /^HTTP\/1\.1 200/);
  t.ok(headsOpened > 0, "plain requests travel with a structured head");
  const names = (lastHead?.headers ?? []).map(([n]) => n.toLowerCase());
  const value = (n: string) =>
    (lastHead?.headers ?? []).filter(([k]) => k.toLowerCase() === n).map(([, v]) => v);
  t.equal(lastHead?.method, "GET");
  t.equal(lastHead?.path, "/version");
  t.same(value("impersonate-user"), ["tether:alice"]);
  t.same(value("impersonate-group"), ["tether:admins"]);
  t.notOk(names.includes("authorization"), "the caller's token stays with Tether");
  t.same(value("x-forwarded-for"), ["127.0.0.1"]);
  for (const n of ["connection", "keep-alive", "host", "transfer-encoding"])
    t.notOk(names.includes(n), `no ${n}`);
});

t.test("malformed, oversized and interim heads get a 502 Status, not a hang", async (t) => {
  const cases: [string, Buffer][] = [
    ["not JSON", framed("{")],
    ["a CR LF in a header value", framed('{"status":200,"headers":[["X-A","a\\r\\nSet-Cookie: evil=1"]]}')],
    ["a 101 status", framed('{"status":101,"headers":[]}')],
    ["a head announced at 4 GiB", Buffer.from([0xff, 0xff, 0xff, 0xff])],
    ["a stream that ends inside the head", framed('{"status":200,"headers":[]}').subarray(0, 8)],
  ];
  for (const [what, bytes] of cases) {
    answer = () => bytes;
    const r = await raw(get());
    t.match(r.text, /^HTTP\/1\.1 502 /, what);
    t.match(r.text, /"reason":"BadGateway"/, what);
    t.notMatch(r.text, /evil/, `${what}: nothing of the bad head reaches the caller`);
    t.ok(r.closed, `${what}: answered and closed`);
  }
});

t.test("the agent cannot frame the caller's connection", async (t) => {
  answer = () =>
    Buffer.concat([
      encodeResponseHead({
        status: 200,
        headers: [
          ["Transfer-Encoding", "chunked"],
          ["Connection", "keep-alive, X-Drop"],
          ["Keep-Alive", "timeout=999"],
          ["Upgrade", "h2c"],
          ["X-Drop", "1"],
        ],
      }),
      Buffer.from("raw bytes, not chunks"),
    ]);
  const r = await raw(get());
  const head = r.text.slice(0, r.text.indexOf("\r\n\r\n"));
  t.match(head, /^HTTP\/1\.1 200/);
  t.notMatch(head, /timeout=999|h2c/i, "neither Keep-Alive nor Upgrade of the agent's");
  t.equal((head.match(/^transfer-encoding:/gim) ?? []).length, 1, "Tether's own chunked framing, once");
  t.match(r.text, /\r\n15\r\nraw bytes, not chunks\r\n0\r\n\r\n$/, "the body framed by Tether");
});

t.test("bytes past a declared Content-Length never reach a kept-alive caller", async (t) => {
  const smuggled = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!";
  answer = () =>
    Buffer.concat([
      encodeResponseHead({ status: 200, headers: [["Content-Length", "2"]] }),
      Buffer.from(`ok${smuggled}`),
    ]);
  // Two requests pipelined on one connection: a second response hidden in the first body would answer the second.
  const r = await raw(get("", "keep-alive") + get("", "keep-alive"), 3_000);
  t.notMatch(r.text, /evil/, "the hidden response is never sent");
  t.ok((r.text.match(/^HTTP\/1\.1 200/gm) ?? []).length <= 2, "no extra response");

  answer = () =>
    Buffer.concat([
      encodeResponseHead({ status: 200, headers: [["Content-Length", "10"]] }),
      Buffer.from("ok"),
    ]);
  const short = await raw(get("", "keep-alive"), 3_000);
  t.ok(short.closed, "a body cut short closes the connection instead of leaving the caller waiting");
});

t.test("afterwards the server still serves", async (t) => {
  answer = () =>
    Buffer.concat([
      encodeResponseHead({ status: 200, headers: [["Content-Length", "2"]] }),
      Buffer.from("ok"),
    ]);
  const r = await raw(get());
  t.match(r.text, /^HTTP\/1\.1 200/);
  t.match(r.text, /\r\n\r\nok$/);
});
