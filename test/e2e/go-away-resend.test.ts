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

async function serve(agent: FakeAgent, name: string, stream: TunnelStream): Promise<void> {
  stream.on("error", () => {});
  if (stream.metadata[HEAD_METADATA] === undefined) {
    // The server's /version probe speaks raw HTTP/1.1: not this test's concern.
    stream.end("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    agent.probes++;
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
): Promise<{ status: number; body: string; a: FakeAgent; b: FakeAgent }> {
  const a = await dial("a");
  await until("a's session is usable", () => tether.server.sessions.usable("m1").length === 1);
  const aOnServer = tether.server.sessions.usable("m1")[0]!;
  await until("the version probe ended", () => a.probes === 1 && aOnServer.session.streamCount === 0);
  a.ws.pause();
  const answer = call(method, body);
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
