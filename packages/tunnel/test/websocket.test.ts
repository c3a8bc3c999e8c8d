import { randomBytes } from "node:crypto";
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import t, { type Test } from "tap";
import { WebSocket, WebSocketServer } from "ws";
import {
  ErrorCode,
  type Session,
  sessionFromWebSocket,
  type TetherError,
  WEBSOCKET_OPTIONS,
} from "../src/index.js";
import { inPlaceMaskedSender } from "../src/masked-send.js";
import { readAll } from "./lib/pair.js";

async function sockets(t: Test) {
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1", ...WEBSOCKET_OPTIONS });
  await once(wss, "listening");
  const { port } = wss.address() as AddressInfo;
  const accepted = once(wss, "connection");
  const client = new WebSocket(`ws://127.0.0.1:${port}`, WEBSOCKET_OPTIONS);
  await once(client, "open");
  const [server] = (await accepted) as [WebSocket];
  t.teardown(() => {
    client.terminate();
    server.terminate();
    wss.close();
  });
  return { client, server };
}

const closed = (session: Session) =>
  new Promise<TetherError | undefined>((resolve) => session.once("close", resolve));

t.test("a session runs over a real WebSocket and closes cleanly after go-away", async (t) => {
  const { client, server } = await sockets(t);
  const agent = sessionFromWebSocket(client, { role: "client" });
  const hub = sessionFromWebSocket(server, { role: "server" });
  agent.on("stream", (s) => {
    t.equal(s.service, "kubernetes");
    s.pipe(s);
  });
  const s = hub.open("kubernetes", { user: "alice" });
  const body = Buffer.alloc(2 * 1024 * 1024, 7);
  s.end(body);
  t.ok((await readAll(s)).equals(body), "2 MiB echoed through the agent");
  t.type(await hub.ping(), "number");
  const ends = Promise.all([closed(agent), closed(hub)]);
  hub.goAway();
  t.same(await ends, [undefined, undefined], "both ends closed without error");
});

t.test("the client masks its data frames in place, and they arrive intact", async (t) => {
  const { client, server } = await sockets(t);
  t.type(inPlaceMaskedSender(client), "function", "the installed ws lets the client mask in place");
  t.equal(inPlaceMaskedSender(server), undefined, "a server end does not mask");
  const agent = sessionFromWebSocket(client, { role: "client" });
  const hub = sessionFromWebSocket(server, { role: "server" });
  let viaWsSend = 0;
  const send = client.send.bind(client);
  client.send = ((...args: Parameters<typeof client.send>) => {
    // Pooled (masked in place) are the Data frames from 4 KiB up; control messages (pings too) are not.
    const message = args[0] as Buffer;
    if (message[1] === 0 && message.length > 12 + 4096) viaWsSend++;
    return send(...args);
  }) as typeof client.send;
  const received = new Promise<Buffer>((resolve) => hub.once("stream", (s) => resolve(readAll(s))));
  const body = randomBytes(4 * 1024 * 1024);
  agent.open("logs").end(body);
  t.ok((await received).equals(body), "4 MiB of random bytes, unchanged");
  t.equal(viaWsSend, 0, "no large data frame took ws.send");
  agent.close();
});

t.test("a text message is a protocol error", async (t) => {
  const { client, server } = await sockets(t);
  const hub = sessionFromWebSocket(server, { role: "server" });
  const ended = closed(hub);
  client.send("hello");
  t.equal((await ended)?.code, ErrorCode.PROTOCOL);
});

t.test("a message over the size limit closes the WebSocket and fails the session", async (t) => {
  const { client, server } = await sockets(t);
  const hub = sessionFromWebSocket(server, { role: "server" });
  const ended = closed(hub);
  client.send(Buffer.alloc(WEBSOCKET_OPTIONS.maxPayload + 1));
  t.equal((await ended)?.code, ErrorCode.TRANSPORT_CLOSED);
});

t.test("a peer that goes silent is detected and the socket is dropped", async (t) => {
  const { client } = await sockets(t);
  // The server end runs no session: it never answers, as a peer behind a dead NAT mapping.
  const agent = sessionFromWebSocket(client, { role: "client", keepAliveInterval: 10, deadPeerTimeout: 50 });
  const hold = setInterval(() => {}, 1000);
  const err = await closed(agent);
  clearInterval(hold);
  t.equal(err?.code, ErrorCode.KEEPALIVE_TIMEOUT);
  await once(client, "close");
  t.pass("the WebSocket was terminated");
});

t.test("only an open WebSocket can carry a session", async (t) => {
  const ws = new WebSocket("ws://127.0.0.1:1");
  ws.on("error", () => {});
  t.throws(() => sessionFromWebSocket(ws, { role: "client" }), { code: ErrorCode.INVALID_ARGUMENT });
  ws.terminate();
});
