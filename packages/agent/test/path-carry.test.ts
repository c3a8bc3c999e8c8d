// The agent carries its last session's path estimate into the next one: the
// reconnect's session starts from it, and the connect request tells the server
// (x-tether-path-estimate), against a minimal tunnel server and a fake apiserver.
import "reflect-metadata";
import { once } from "node:events";
import type { IncomingMessage } from "node:http";
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
import {
  PATH_ESTIMATE_HEADER,
  parsePathEstimate,
  type Session,
  sessionFromWebSocket,
  WEBSOCKET_OPTIONS,
} from "@tether/tunnel";
import t from "tap";
import { WebSocketServer } from "ws";
import { TetherAgent } from "../src/agent.js";
import type { KubeTarget } from "../src/kube-target.js";
import { makeCert } from "./lib/certs.js";

const ca = await makeCert({ cn: "test-ca", ca: true });
const serving = await makeCert({ cn: "server", issuer: ca, ip: "127.0.0.1" });
const agentCert = await makeCert({ cn: "cluster:m1", issuer: ca });

const BODY_BYTES = 4 * 1024 * 1024;
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

const https = createHttpsServer({
  key: serving.keyPem,
  cert: serving.certPem,
  ca: ca.certPem,
  requestCert: true,
  rejectUnauthorized: true,
});
const wss = new WebSocketServer({ server: https, ...WEBSOCKET_OPTIONS });
const connected: { session: Session; req: IncomingMessage }[] = [];
const waiters: (() => void)[] = [];
wss.on("connection", (ws, req) => {
  const session = sessionFromWebSocket(ws, { role: "server" });
  session.on("error", () => {});
  connected.push({ session, req });
  for (const w of waiters.splice(0)) w();
});
await new Promise<void>((r) => https.listen(0, "127.0.0.1", r));
t.teardown(() => {
  for (const ws of wss.clients) ws.terminate();
  wss.close();
  https.close();
});

function nextSession(): Promise<(typeof connected)[number]> {
  const have = connected.length;
  return new Promise((resolve) => {
    const check = () => (connected.length > have ? resolve(connected[have]!) : waiters.push(check));
    check();
  });
}

async function get(session: Session): Promise<number> {
  const stream = session.open(KUBERNETES_SERVICE, {
    [AUTH_METADATA]: "passthrough",
    [HEAD_METADATA]: HEAD_VERSION,
  });
  stream.end(encodeRequestHead({ method: "GET", path: "/big", headers: [] }));
  const head = await readResponseHead(stream);
  let bytes = 0;
  for await (const chunk of stream as Duplex as AsyncIterable<Buffer>) bytes += chunk.length;
  t.equal(head.status, 200);
  return bytes;
}

t.test("a reconnect starts from the last session's estimate and announces it", async (t) => {
  const up = nextSession();
  const agent = new TetherAgent({
    server: `https://127.0.0.1:${(https.address() as { port: number }).port}`,
    caPem: ca.certPem,
    certPem: agentCert.certPem,
    keyPem: agentCert.keyPem,
    target,
    backoff: { baseMs: 10, capMs: 20 },
  });
  agent.start();
  const first = await up;
  t.equal(first.req.headers[PATH_ESTIMATE_HEADER], undefined, "a first connect has nothing to announce");
  await agent.whenConnected();
  t.equal(await get(first.session), BODY_BYTES);
  // Let the delivery probes of the body come back.
  while (agent.session?.pathEstimate?.sendRate === undefined || agent.session.pathEstimate.sendRate === 0) {
    await new Promise((r) => setTimeout(r, 10));
  }
  const learned = agent.session!.pathEstimate!;
  const again = nextSession();
  first.session.close(); // the server goes away: the agent redials
  const second = await again;
  const announced = parsePathEstimate(second.req.headers[PATH_ESTIMATE_HEADER]);
  t.ok(announced, `announced: ${String(second.req.headers[PATH_ESTIMATE_HEADER])}`);
  // Later probes of the same body may still have moved it a little.
  const ratio = announced!.sendRate / learned.sendRate;
  t.ok(ratio > 0.25 && ratio < 4, `what the last session learned (${ratio.toFixed(2)} of it)`);
  await agent.whenConnected();
  t.ok(agent.session!.path.rate > 0 || agent.session!.path.receiveRate > 0, "the new session starts from it");
  t.equal(await get(second.session), BODY_BYTES, "and moves data");
  await agent.stop();
  if (!second.session.closed) await once(second.session, "close");
});
