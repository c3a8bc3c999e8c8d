// Issue 14: a request whose tunnel stream crossed the agent's go-away (the
// agent had sent go-away before it saw the stream's open) did nothing on the
// member, so the server sends it again on the cluster's other agent session
// instead of answering 503 — a GET, and a request whose body it still holds.
// A body it could not hold (over REPLAY_LIMIT) is not sent again.
//
// The crossing is made deterministic: agent "a" stops reading its WebSocket,
// the request's open waits unread in its socket, agent "b" connects, "a"
// sends go-away (naming only streams it saw) and reads again.
import { request } from "node:https";
import { connect as tlsConnect } from "node:tls";
import {
  AGENT_FEATURES_HEADER,
  AGENT_INSTANCE_HEADER,
  AGENT_PATH,
  encodeResponseHead,
  HEAD_FEATURE,
  HEAD_METADATA,
  readRequestHead,
} from "@tether/common";
import { REPLAY_LIMIT } from "@tether/server";
import { type Session, sessionFromWebSocket, type TunnelStream, WEBSOCKET_OPTIONS } from "@tether/tunnel";
import t from "tap";
import { WebSocket } from "ws";
import { startTether, until } from "./fixture.js";
import { issueAgentCert } from "./tunnel-client.js";

// a's WebSocket is not read for a while: neither end may take that for a dead peer.
const TUNNEL = { keepAliveInterval: 500, deadPeerTimeout: 60_000 };
const tether = await startTether({ tunnel: TUNNEL });
t.teardown(() => tether.stop());
await tether.registerCluster("m1", "passthrough");
const cert = await issueAgentCert(tether.ca, tether.store, "m1");

interface FakeAgent {
  session: Session;
  ws: WebSocket;
  /** Requests it answered (method and path). */
  served: string[];
  /** Raw HTTP/1.1 streams it answered (the server's /version probe). */
  probes: number;
}

/** An agent that answers every structured request 200 with its own name, the method and the body it got. */
function dial(instance: string): Promise<FakeAgent> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${tether.server.url.replace(/^https/, "wss")}${AGENT_PATH}`, {
      ...WEBSOCKET_OPTIONS,
      ca: tether.ca.certPem,
      cert: cert.certPem,
      key: cert.keyPem,
      headers: { [AGENT_FEATURES_HEADER]: HEAD_FEATURE, [AGENT_INSTANCE_HEADER]: instance },
    });
    ws.once("error", reject);
    ws.once("open", () => {
      const session = sessionFromWebSocket(ws, { ...TUNNEL, role: "client", accept: () => true });
      const agent: FakeAgent = { session, ws, served: [], probes: 0 };
      session.on("stream", (stream: TunnelStream) => void serve(agent, instance, stream));
      resolve(agent);
    });
  });
}

/** Reads `stream` up to the end of its request head; the request line. */
function firstLine(stream: TunnelStream): Promise<string> {
  return new Promise((resolve) => {
    let text = "";
    const onData = (c: Buffer) => {
      text += c.toString("latin1");
      if (!text.includes("\r\n\r\n")) return;
      stream.off("data", onData);
      resolve(text.split("\r\n")[0]!);
    };
    stream.on("data", onData);
  });
}

async function serve(agent: FakeAgent, name: string, stream: TunnelStream): Promise<void> {
  stream.on("error", () => {});
  if (stream.metadata[HEAD_METADATA] === undefined) {
    // Raw HTTP/1.1: the server's /version probe (not this test's concern), or an upgrade.
    const line = await firstLine(stream);
    if (!/ HTTP\/1\.1$/.test(line) || !line.includes("/exec")) {
      stream.end("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
      agent.probes++;
      return;
    }
    agent.served.push(`UPGRADE ${line}`);
    stream.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    stream.end(`${name} switched`);
    return;
  }
  const head = await readRequestHead(stream);
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  agent.served.push(`${head.method} ${head.path}`);
  const got = Buffer.concat(chunks);
  const body = `${name} ${head.method} ${got.length}:${got.subarray(0, 64)}`;
  stream.write(encodeResponseHead({ status: 200, headers: [["content-type", "text/plain"]] }));
  stream.end(body);
}

function call(method: string, body?: Buffer): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${tether.server.url}/clusters/m1/api/v1/namespaces`,
      {
        method,
        ca: tether.ca.certPem,
        headers: {
          authorization: "Bearer member-token",
          ...(body ? { "content-length": String(body.length) } : {}),
        },
      },
      (res) => {
        let text = "";
        res.on("data", (c: Buffer) => (text += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

/**
 * Sends a request while only "a" is usable and does not read; once its open
 * waits in a's socket (and `ready` says so), "b" connects and "a" goes away.
 */
async function crossing(
  method: string,
  body: Buffer | undefined,
  ready: (a: Session) => boolean,
  send: () => Promise<{ status: number; body: string }> = () => call(method, body),
): Promise<{ status: number; body: string; a: FakeAgent; b: FakeAgent }> {
  const a = await dial("a");
  await until("a's session is usable", () => tether.server.sessions.usable("m1").length === 1);
  const aOnServer = tether.server.sessions.usable("m1")[0]!;
  await until("the version probe ended", () => a.probes === 1 && aOnServer.session.streamCount === 0);
  a.ws.pause();
  const answer = send();
  await until("the request's open is on its way to a", () => ready(aOnServer.session));
  const b = await dial("b");
  await until("b's session is usable", () => tether.server.sessions.usable("m1").length === 2);
  a.session.goAway();
  a.ws.resume();
  const got = await answer;
  return { ...got, a, b };
}

const leave = async (...agents: FakeAgent[]) => {
  for (const agent of agents) agent.session.close();
  await until("the agents are gone", () => tether.server.sessions.list().every((e) => e.session.closed));
};

t.test("a GET whose stream crossed the agent's go-away goes to the other agent", async (t) => {
  const got = await crossing("GET", undefined, (a) => a.streamCount === 1);
  t.equal(got.status, 200, "the caller got the member's answer, not a 503");
  t.match(got.body, /^b GET /, "the other agent served it");
  t.same(got.a.served, [], "the agent that went away served nothing");
  await leave(got.a, got.b);
});

t.test("a request whose body the server holds is sent again with that body", async (t) => {
  const got = await crossing("POST", Buffer.from('{"kind":"Namespace"}'), (a) => a.streamCount === 1);
  t.equal(got.status, 200);
  t.equal(got.body, 'b POST 20:{"kind":"Namespace"}', "the other agent got the whole body");
  t.same(got.a.served, []);
  await leave(got.a, got.b);
});

t.test("a body larger than what is held for a resend fails as before: 503", async (t) => {
  const body = Buffer.alloc(REPLAY_LIMIT + 4096, 0x61);
  let sentBefore = 0;
  const got = await crossing("POST", body, (a) => {
    if (sentBefore === 0) sentBefore = a.bytesSent || 1;
    // The body was read past the bound: it is on its way to "a", held no more.
    return a.streamCount === 1 && a.bytesSent - sentBefore > REPLAY_LIMIT;
  });
  t.equal(got.status, 503, "the caller is told the agent disconnected");
  t.same(got.a.served, []);
  t.same(got.b.served, [], "it was not sent again");
  await leave(got.a, got.b);
});

/** An exec upgrade on a raw TLS connection: the status line and what followed it, until the server closed. */
function upgrade(): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const url = new URL(tether.server.url);
    const socket = tlsConnect({ host: url.hostname, port: Number(url.port), ca: tether.ca.certPem }, () => {
      socket.write(
        "GET /clusters/m1/api/v1/namespaces/default/pods/box/exec?command=sh HTTP/1.1\r\n" +
          `Host: ${url.host}\r\nAuthorization: Bearer member-token\r\n` +
          "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n" +
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
      );
    });
    let text = "";
    socket.on("data", (c: Buffer) => (text += c.toString("latin1")));
    socket.on("error", reject);
    socket.on("close", () => resolve({ status: Number(text.split(" ")[1] ?? 0), body: text }));
  });
}

t.test("an exec whose stream crossed the agent's go-away is relayed by the other agent", async (t) => {
  const got = await crossing("GET", undefined, (a) => a.streamCount === 1, upgrade);
  t.equal(got.status, 101, "the caller's connection switched, no 503");
  t.match(got.body, /b switched$/, "through the other agent");
  t.same(got.a.served, [], "the agent that went away relayed nothing");
  await leave(got.a, got.b);
});
