// TetherAgent.stop() with a drain, against a minimal tunnel server (a ws
// server with a server-role session) and a fake apiserver: a response still
// crossing when the agent stops reaches the server whole, and the WebSocket
// ends with the close handshake, not a cut connection. The session ends as
// soon as its last stream has handed its FIN to the transport, while those
// last messages may still wait to be written: stopping must let them go first.
import "reflect-metadata";
import { once } from "node:events";
import { createServer as createHttpsServer } from "node:https";
import type { Duplex } from "node:stream";
import {
  AUTH_METADATA,
  encodeRequestHead,
  HEAD_METADATA,
  HEAD_VERSION,
  KUBERNETES_SERVICE,
  readResponseHead,
} from "@tether/common";
import { type Session, sessionFromWebSocket, WEBSOCKET_OPTIONS } from "@tether/tunnel";
import t from "tap";
import { WebSocketServer } from "ws";
import { TetherAgent } from "../src/agent.js";
import type { KubeTarget } from "../src/kube-target.js";
import { makeCert } from "./lib/certs.js";

const ca = await makeCert({ cn: "test-ca", ca: true });
const serving = await makeCert({ cn: "server", issuer: ca, ip: "127.0.0.1" });
const agentCert = await makeCert({ cn: "cluster:m1", issuer: ca });

/** Big enough that the agent's last messages are still queued when its session ends. */
const BODY_BYTES = 8 * 1024 * 1024;
const body = Buffer.alloc(BODY_BYTES, 0x61);
const apiserver = createHttpsServer({ key: serving.keyPem, cert: serving.certPem }, (req, res) => {
  req.resume();
  res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(BODY_BYTES) });
  res.end(body);
});
await new Promise<void>((r) => apiserver.listen(0, "127.0.0.1", r));
t.teardown(() => apiserver.close());
const target: KubeTarget = {
  url: new URL(`https://127.0.0.1:${(apiserver.address() as { port: number }).port}`),
  tls: { ca: ca.certPem },
  authorization: () => "Bearer agent-token",
  description: "fake apiserver",
};

/** The tunnel server's end: one session per agent connection, and how its WebSocket closed. */
const https = createHttpsServer({
  key: serving.keyPem,
  cert: serving.certPem,
  ca: ca.certPem,
  requestCert: true,
  rejectUnauthorized: true,
});
const wss = new WebSocketServer({ server: https, ...WEBSOCKET_OPTIONS });
const connected: { session: Session; closeCode: Promise<number> }[] = [];
const waiters: (() => void)[] = [];
wss.on("connection", (ws) => {
  const session = sessionFromWebSocket(ws, { role: "server" });
  session.on("error", () => {});
  const closeCode = new Promise<number>((r) => ws.once("close", (code) => r(code)));
  connected.push({ session, closeCode });
  for (const w of waiters.splice(0)) w();
});
await new Promise<void>((r) => https.listen(0, "127.0.0.1", r));
t.teardown(() => {
  for (const ws of wss.clients) ws.terminate();
  wss.close();
  https.close();
});
const serverUrl = `https://127.0.0.1:${(https.address() as { port: number }).port}`;

function nextSession(): Promise<(typeof connected)[number]> {
  const have = connected.length;
  return new Promise((resolve) => {
    const check = () => (connected.length > have ? resolve(connected[have]!) : waiters.push(check));
    check();
  });
}

async function readAll(stream: Duplex): Promise<{ bytes: number; error?: Error }> {
  let bytes = 0;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) bytes += chunk.length;
    return { bytes };
  } catch (err) {
    return { bytes, error: err as Error };
  }
}

function startAgent(): TetherAgent {
  const agent = new TetherAgent({
    server: serverUrl,
    caPem: ca.certPem,
    certPem: agentCert.certPem,
    keyPem: agentCert.keyPem,
    target,
    // No keepalive pings: nothing but the responses crosses.
    tunnel: { keepAliveInterval: 0, deadPeerTimeout: 0 },
  });
  agent.start();
  return agent;
}

t.test("responses in flight at a draining stop reach the server whole", async (t) => {
  // Repeated: whether the last messages are still queued at the end depends on timing.
  for (let round = 0; round < 5; round++) {
    const up = nextSession();
    const agent = startAgent();
    const { session, closeCode } = await up;
    const streams = [0, 1, 2].map(() => {
      const stream = session.open(KUBERNETES_SERVICE, {
        [AUTH_METADATA]: "passthrough",
        [HEAD_METADATA]: HEAD_VERSION,
      });
      stream.end(encodeRequestHead({ method: "GET", path: "/big", headers: [] }));
      return stream;
    });
    const heads = await Promise.all(streams.map((s) => readResponseHead(s)));
    t.same(
      heads.map((h) => h.status),
      [200, 200, 200],
      `round ${round}: the heads came`,
    );
    const bodies = Promise.all(streams.map(readAll));
    await agent.stop({ drainMs: 10_000 });
    const results = await bodies;
    t.same(
      results.map((r) => ({ bytes: r.bytes, error: r.error?.message })),
      [0, 1, 2].map(() => ({ bytes: BODY_BYTES, error: undefined })),
      `round ${round}: every body arrived whole`,
    );
    t.equal(await closeCode, 1000, `round ${round}: the WebSocket ended with the close handshake`);
    if (!session.closed) await once(session, "close");
  }
});

t.test("a stop without a drain still closes with the handshake", async (t) => {
  const up = nextSession();
  const agent = startAgent();
  const { closeCode } = await up;
  // The server may have its end before the agent's WebSocket is open; a dial under way is cut.
  await agent.whenConnected();
  await agent.stop();
  t.equal(await closeCode, 1000, "close code 1000");
});
