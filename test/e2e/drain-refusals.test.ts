// Issue 14, drain: what a caller on a connection still open sees once the
// drain began, on raw TLS sockets. A request head finished after SIGTERM's
// drain started gets 503 with Retry-After and Connection: close (/readyz
// too, which is how the kubelet sees the pod unready); a new connection is
// refused; a request in flight (a join whose body is still coming) is
// waited for, and the drain ends as soon as it is answered. Before the drain,
// for --shutdown-delay, the listener stays open: /readyz answers 503 and
// agents are refused, while callers' requests, on new connections and old,
// are served with Connection: close (GOAWAY on h2).
import { mkdtemp, rm } from "node:fs/promises";
import { connect as http2Connect } from "node:http2";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import { JOIN_CA_PATH } from "@tether/common";
import { createLogger, FileStore, TetherServer } from "@tether/server";
import t from "tap";
import { until } from "./fixture.js";
import { type RawTarget, rawTls, upgrade, whenClosed } from "./raw-client.js";

const dir = await mkdtemp(join(tmpdir(), "tether-drain-refusals-"));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const store = await FileStore.open(join(dir, "state"));
const server = await TetherServer.start({
  store,
  host: "127.0.0.1",
  port: 0,
  log: createLogger({ level: "silent" }),
});
t.teardown(() => server.close());
const target: RawTarget = { url: server.url, caPem: server.ca.certPem };

/** An h2 connection: GETs on it, and the server's GOAWAY. */
function h2Client(url: string, caPem: string) {
  const session = http2Connect(url, { ca: caPem, servername: "localhost" });
  session.on("error", () => {});
  const goaway = new Promise<void>((resolve) => session.once("goaway", () => resolve()));
  return {
    goaway,
    close: () => session.destroy(),
    get: (path: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const stream = session.request({ ":path": path });
        let status = 0;
        let body = "";
        stream.on("response", (headers) => (status = Number(headers[":status"])));
        stream.setEncoding("utf8").on("data", (d: string) => (body += d));
        stream.once("end", () => resolve({ status, body }));
        stream.once("error", reject);
      }),
  };
}

/** Everything the server sends on `socket` until it closes it. */
function answer(socket: TLSSocket): Promise<string> {
  let text = "";
  socket.setEncoding("utf8").on("data", (d: string) => (text += d));
  return whenClosed(socket).then(() => text);
}

t.test("during a drain, open connections get 503 and new ones are refused", async (t) => {
  const port = Number(new URL(server.url).port);
  const body = JSON.stringify({ token: "x".repeat(40), csr: "y" });
  // Two joins whose bodies are still coming: requests in flight, on connections the drain keeps.
  const held = await Promise.all(
    [0, 1].map(async () => {
      const socket = await rawTls(target);
      const text = answer(socket);
      socket.write(
        `POST /join/v1/certificate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 10)}`,
      );
      return { socket, text };
    }),
  );
  await new Promise((r) => setTimeout(r, 200));

  let drained = false;
  const shutdown = server.shutdown(30_000, 0).then((cut) => {
    drained = true;
    return cut;
  });
  const code = await new Promise<string>((resolve) => {
    const s = connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      resolve("connected");
    });
    s.once("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? "error"));
  });
  t.equal(code, "ECONNREFUSED", "a new connection is refused: the listener is closed");
  t.notOk(drained, "the drain waits for the requests in flight");

  // Each finishes its body and sends the next request on the same connection.
  const [readyz, proxied] = held;
  readyz!.socket.write(`${body.slice(10)}GET /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n`);
  proxied!.socket.write(
    `${body.slice(10)}GET /clusters/m1/api HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer whatever\r\n\r\n`,
  );
  const [ready, refused] = await Promise.all([readyz!.text, proxied!.text]);
  const second = (text: string) => text.slice(text.indexOf("HTTP/1.1", 1));
  t.match(ready, /^HTTP\/1\.1 [45]\d\d /, "the join in flight is answered (refused: its token is made up)");
  t.match(second(ready), /^HTTP\/1\.1 503 /, "then /readyz on the same connection answers 503");
  t.match(second(refused), /^HTTP\/1\.1 503 /, "a request for a member gets 503");
  t.match(second(refused), /\r\nretry-after: 1\r\n/i, "with Retry-After, so client-go retries");
  t.match(
    second(refused),
    /\r\nconnection: close\r\n/i,
    "and the connection closes, so the retry dials again",
  );
  t.match(second(refused), /"kind":"Status"[\s\S]*shutting down/, "a Kubernetes Status that says why");
  t.equal(await shutdown, 0, "the drain ends once both are answered, with nothing cut");
});

t.test(
  "during --shutdown-delay callers are still served and agents refused, then the listener closes",
  async (t) => {
    const leaving = await TetherServer.start({
      store: await FileStore.open(join(dir, "state-delay")),
      host: "127.0.0.1",
      port: 0,
      log: createLogger({ level: "silent" }),
      // Long enough for the requests below on a loaded machine: the test waits for its end, never times it.
      limits: { shutdownGraceMs: 30_000, shutdownDelayMs: 8_000 },
    });
    t.teardown(() => leaving.close());
    const at: RawTarget = { url: leaving.url, caPem: leaving.ca.certPem };
    const port = Number(new URL(leaving.url).port);
    const get = (path: string) => `GET ${path} HTTP/1.1\r\nHost: localhost\r\n\r\n`;
    // A keep-alive connection (HTTP/1.1's default: no Connection header) a balancer opened before the stop.
    const before = await rawTls(at);
    const beforeText = answer(before);
    let seen = "";
    before.on("data", (d: string) => (seen += d));
    before.write(get(JOIN_CA_PATH));
    await until("the first answer", () => /\r\n\r\n[\s\S]*-----END CERTIFICATE-----/.test(seen), 15_000);
    t.notMatch(seen, /\r\nconnection: close\r\n/i, "before the stop the connection is kept");
    // And an h2 connection (client-go's) that carried a request.
    const h2 = h2Client(leaving.url, at.caPem);
    t.equal((await h2.get(JOIN_CA_PATH)).status, 200, "an h2 request before the stop");

    let stopped = false;
    const shutdown = leaving.shutdown().then((cut) => {
      stopped = true;
      return cut;
    });
    const fresh = async (request: string) => {
      const socket = await rawTls(at);
      const text = answer(socket);
      socket.write(request);
      return text;
    };
    // As a probe asks: a health path leaves the connection to the caller.
    const probe = `GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`;
    t.match(await fresh(probe), /^HTTP\/1\.1 503 /, "/readyz answers 503 at once: the balancer takes it out");
    await h2.goaway;
    t.pass("the open h2 connection gets GOAWAY: its client sends its next request on a new connection");
    const h2Fresh = h2Client(leaving.url, at.caPem);
    t.equal((await h2Fresh.get(JOIN_CA_PATH)).status, 200, "a new h2 connection is served");
    await h2Fresh.goaway;
    t.pass("and gets GOAWAY after its request");
    h2.close();
    h2Fresh.close();
    const served = await fresh(get(JOIN_CA_PATH));
    t.match(served, /^HTTP\/1\.1 200 /, "a new connection is still accepted, and its request served");
    t.match(served, /-----BEGIN CERTIFICATE-----/, "the join endpoint's CA, as before the stop");
    t.match(
      served,
      /\r\nconnection: close\r\n/i,
      "with Connection: close, so the next one goes to another replica",
    );
    before.write(get(JOIN_CA_PATH));
    const both = await beforeText;
    const second = both.slice(both.indexOf("HTTP/1.1", 1));
    t.match(second, /^HTTP\/1\.1 200 /, "the next request on an older connection is served too, not refused");
    t.match(second, /\r\nconnection: close\r\n/i, "and that connection closes after it");
    const agent = await upgrade(at, "/agent/v1/connect", undefined);
    t.equal(agent.status, 503, "an agent's tunnel is refused: its agent is to dial a replica that stays");
    t.match(agent.body, /shutting down/, "saying why");
    t.notOk(stopped, "the drain has not begun: the delay is not over");

    await until(
      "the listener closes once the delay is over",
      async () => {
        const code = await new Promise<string>((resolve) => {
          const s = connect(port, "127.0.0.1");
          s.once("connect", () => {
            s.destroy();
            resolve("connected");
          });
          s.once("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? "error"));
        });
        return code === "ECONNREFUSED";
      },
      60_000,
    );
    t.pass("then a new connection is refused: the listener is closed");
    t.equal(await shutdown, 0, "and the drain ends with nothing cut");
  },
);
