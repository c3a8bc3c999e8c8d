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
import { socketSender } from "../src/ws-send.js";
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

/** The WebSocket frame at the start of `buf`: its header size and payload length. */
function frameAt(buf: Buffer): { headerSize: number; length: number; masked: boolean } {
  const masked = (buf[1]! & 0x80) !== 0;
  let length = buf[1]! & 0x7f;
  let headerSize = 2;
  if (length === 126) {
    length = buf.readUInt16BE(2);
    headerSize += 2;
  } else if (length === 127) {
    length = Number(buf.readBigUInt64BE(2));
    headerSize += 8;
  }
  return { headerSize: headerSize + (masked ? 4 : 0), length, masked };
}

for (const role of ["client", "server"] as const) {
  t.test(`the ${role} writes each message to the socket as one whole frame, one at a time`, async (t) => {
    const ends = await sockets(t);
    const ws = ends[role];
    t.type(socketSender(ws), "object", "the installed ws lets the session write to its socket");
    const sending = sessionFromWebSocket(ws, { role });
    const receiving = sessionFromWebSocket(role === "client" ? ends.server : ends.client, {
      role: role === "client" ? "server" : "client",
    });
    let viaWsSend = 0;
    const send = ws.send.bind(ws);
    ws.send = ((...args: Parameters<typeof ws.send>) => {
      viaWsSend++;
      return send(...args);
    }) as typeof ws.send;
    const socket = (ws as unknown as { _socket: import("node:net").Socket })._socket;
    t.notOk(
      socket.listeners("data").some((f) => f.name === "socketOnData"),
      "the session reads the socket, not ws (ws-receive.ts)",
    );
    const write = socket.write.bind(socket);
    let writes = 0;
    let whole = 0;
    let queuedBehind = 0;
    let masked = 0;
    let fourRecords = 0;
    let pastFour = 0;
    socket.write = ((chunk: Buffer, ...rest: unknown[]) => {
      writes++;
      if (chunk.length === 4 * 16384) fourRecords++;
      if (chunk.length > 4 * 16384) pastFour++;
      const f = frameAt(chunk);
      if (f.headerSize + f.length === chunk.length) whole++;
      if (f.masked) masked++;
      if (socket.writableLength > 0) queuedBehind++;
      return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof socket.write;
    const received = new Promise<Buffer>((resolve) => receiving.once("stream", (s) => resolve(readAll(s))));
    const body = randomBytes(4 * 1024 * 1024);
    sending.open("logs").end(body);
    t.ok((await received).equals(body), "4 MiB of random bytes, unchanged");
    t.equal(viaWsSend, 0, "nothing went through ws.send");
    t.ok(writes >= 64, `${writes} writes for 64 data frames and the control messages`);
    t.equal(whole, writes, "every write is one whole WebSocket frame");
    t.equal(masked, role === "client" ? writes : 0, "the client masks every frame, the server none");
    t.equal(queuedBehind, 0, "no write waited behind another in the socket");
    // Not all of them: frames shrink to ~4 ms of the measured rate when the machine is slow.
    t.ok(fourRecords > 0, `${fourRecords} bulk messages fill exactly four 16 KiB TLS records`);
    t.equal(pastFour, 0, "none spills a few bytes into a fifth record");
    sending.close();
  });
}

for (const role of ["client", "server"] as const) {
  t.test(
    `the ${role}: a writer of 64 KiB chunks that waits for drain sends one message per chunk`,
    async (t) => {
      // Frames prefer the four-record size (65516 / 65520), which a 64 KiB chunk overshoots by 16-20
      // bytes: that tail must finish the chunk's frame, not go out as a message of its own.
      const ends = await sockets(t);
      const ws = ends[role];
      const sending = sessionFromWebSocket(ws, { role });
      const receiving = sessionFromWebSocket(role === "client" ? ends.server : ends.client, {
        role: role === "client" ? "server" : "client",
      });
      const socket = (ws as unknown as { _socket: import("node:net").Socket })._socket;
      const write = socket.write.bind(socket);
      let dataMessages = 0;
      let tails = 0;
      socket.write = ((chunk: Buffer, ...rest: unknown[]) => {
        const f = frameAt(chunk);
        // Byte 1 of the tunnel frame after the WebSocket header is its type (0: Data), masked by the client.
        const type = chunk[f.headerSize + 1]! ^ (f.masked ? chunk[f.headerSize - 3]! : 0);
        const isData = f.length >= 12 && type === 0;
        if (isData) dataMessages++;
        if (isData && f.length - 12 > 0 && f.length - 12 < 1024) tails++;
        return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
      }) as typeof socket.write;
      const chunks = 64;
      const chunk = randomBytes(64 * 1024);
      const received = new Promise<Buffer>((resolve) => receiving.once("stream", (s) => resolve(readAll(s))));
      const stream = sending.open("logs");
      for (let i = 0; i < chunks; i++) {
        if (!stream.write(chunk)) await once(stream, "drain");
      }
      stream.end();
      const all = await received;
      t.equal(all.length, chunks * chunk.length, "every byte arrived");
      t.ok(all.subarray(0, chunk.length).equals(chunk), "unchanged");
      t.equal(tails, 0, "no data message carries only a chunk's tail");
      // Frames shrink to ~4 ms of the measured rate when the machine is slow, so allow some more.
      t.ok(dataMessages <= 2 * chunks, `${dataMessages} data messages for ${chunks} chunks`);
      sending.close();
    },
  );
}

t.test("closing lets every queued message go out before the close frame", async (t) => {
  const { client, server } = await sockets(t);
  const agent = sessionFromWebSocket(client, { role: "client" });
  const hub = sessionFromWebSocket(server, { role: "server" });
  hub.on("stream", (s) => s.on("error", () => {}).resume());
  const ended = closed(hub);
  agent.on("error", () => {});
  const stream = agent.open("logs");
  stream.on("error", () => {});
  stream.write(Buffer.alloc(256 * 1024, 1));
  // After the pump queued the stream's window as four data messages, before they are all written:
  // the go-away that destroy() sends has to wait behind them, and the close frame behind it.
  process.nextTick(() => agent.destroy(new Error("shutting down")));
  t.equal((await ended)?.code, ErrorCode.PEER_GOAWAY, "the peer heard why, not just a closed socket");
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
