import { randomBytes } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { Duplex } from "node:stream";
import t, { type Test } from "tap";
import { type WebSocket, WebSocketServer } from "ws";
import { WEBSOCKET_OPTIONS } from "../src/index.js";
import { divertDataFrames } from "../src/ws-receive.js";

/** The server end's socket: what the test pushes is what ws reads, chunk by chunk. */
class Wire extends Duplex {
  readonly written: Buffer[] = [];
  override _read(): void {}
  override _write(chunk: Buffer, _encoding: BufferEncoding, done: () => void): void {
    this.written.push(chunk);
    done();
  }
}

const BINARY = 0x2;
const TEXT = 0x1;
const CONTINUATION = 0x0;
const CLOSE = 0x8;
const PING = 0x9;
const PONG = 0xa;

interface FrameSpec {
  opcode: number;
  payload: Buffer;
  fin?: boolean;
  masked?: boolean;
  rsv?: number;
  /** Length to announce instead of the payload's. */
  announce?: number;
}

/** A client-to-server WebSocket frame, masked with a random key unless told otherwise. */
function frame({ opcode, payload, fin = true, masked = true, rsv = 0, announce }: FrameSpec): Buffer {
  const length = announce ?? payload.length;
  const lengthBytes = length > 0xffff ? 8 : length > 125 ? 2 : 0;
  const header = Buffer.alloc(2 + lengthBytes + (masked ? 4 : 0));
  header[0] = (fin ? 0x80 : 0) | (rsv << 4) | opcode;
  header[1] = (masked ? 0x80 : 0) | (lengthBytes === 8 ? 127 : lengthBytes === 2 ? 126 : length);
  if (lengthBytes === 2) header.writeUInt16BE(length, 2);
  if (lengthBytes === 8) header.writeBigUInt64BE(BigInt(length), 2);
  const body = Buffer.from(payload);
  if (masked) {
    const key = randomBytes(4);
    key.copy(header, header.length - 4);
    for (let i = 0; i < body.length; i++) body[i]! ^= key[i & 3]!;
  }
  return Buffer.concat([header, body]);
}

/** Frames the server end wrote, parsed (server frames are unmasked). */
function written(wire: Wire): Array<{ opcode: number; payload: Buffer }> {
  const bytes = Buffer.concat(wire.written);
  const frames: Array<{ opcode: number; payload: Buffer }> = [];
  let at = 0;
  while (at + 2 <= bytes.length) {
    let length = bytes[at + 1]! & 0x7f;
    let header = 2;
    if (length === 126) {
      length = bytes.readUInt16BE(at + 2);
      header = 4;
    }
    frames.push({ opcode: bytes[at]! & 0x0f, payload: bytes.subarray(at + header, at + header + length) });
    at += header + length;
  }
  return frames;
}

interface End {
  ws: WebSocket;
  wire: Wire;
  /** Binary messages delivered by the diverted path, joined. */
  delivered: Buffer[];
  /** Parts of every delivered message, as delivered. */
  parts: Buffer[][];
  /** Messages ws emitted itself after the socket went back to it. */
  viaWs: Array<{ data: Buffer; isBinary: boolean }>;
  pings: Buffer[];
  errors: Array<Error & { code?: string }>;
  closed: Promise<number>;
  diverted: boolean;
}

async function serverEnd(t: Test): Promise<End> {
  const wss = new WebSocketServer({ noServer: true, ...WEBSOCKET_OPTIONS });
  const wire = new Wire();
  const req = {
    method: "GET",
    url: "/",
    headers: {
      host: "tether.test",
      upgrade: "websocket",
      connection: "Upgrade",
      "sec-websocket-key": randomBytes(16).toString("base64"),
      "sec-websocket-version": "13",
    },
  } as unknown as IncomingMessage;
  const ws = await new Promise<WebSocket>((resolve) =>
    wss.handleUpgrade(req, wire, Buffer.alloc(0), resolve),
  );
  ws.binaryType = "nodebuffer";
  wire.written.length = 0; // the 101 response
  const end: End = {
    ws,
    wire,
    delivered: [],
    parts: [],
    viaWs: [],
    pings: [],
    errors: [],
    closed: new Promise((resolve) => ws.once("close", (code) => resolve(code))),
    diverted: false,
  };
  end.diverted = divertDataFrames(ws, (parts) => {
    end.parts.push(parts);
    end.delivered.push(Buffer.concat(parts));
  });
  ws.on("message", (data, isBinary) => end.viaWs.push({ data: data as Buffer, isBinary }));
  ws.on("ping", (data) => end.pings.push(Buffer.from(data)));
  ws.on("error", (err) => end.errors.push(err));
  t.teardown(() => {
    ws.terminate();
    wss.close();
  });
  // Let the socket start flowing, so each push is one read.
  await new Promise((r) => setImmediate(r));
  return end;
}

/** Pushes `bytes` as the given chunks (cut at `points`), then lets ws's deferred work run. */
async function feed(end: End, bytes: Buffer, points: number[]): Promise<void> {
  let from = 0;
  for (const p of [...points, bytes.length]) {
    if (p > from) end.wire.push(Buffer.from(bytes.subarray(from, p)));
    from = p;
  }
  await new Promise((r) => setImmediate(r));
}

const everyByte = (bytes: Buffer) => Array.from({ length: bytes.length - 1 }, (_, i) => i + 1);

t.test("the installed ws lets the session take binary frames off the socket", async (t) => {
  const end = await serverEnd(t);
  t.ok(end.diverted, "diverted (if this fails, ws changed: see ws-receive.ts)");
  const body = randomBytes(40_000);
  const chunk = frame({ opcode: BINARY, payload: body });
  await feed(end, chunk, [7000, 16384, 32768]);
  t.equal(end.delivered.length, 1);
  t.ok(end.delivered[0]!.equals(body), "unmasked and whole");
  t.equal(end.viaWs.length, 0, "not through ws's 'message'");
  t.ok(end.parts[0]!.length >= 3, `${end.parts[0]!.length} parts: the socket's reads, not a joined copy`);
});

t.test("messages, pings and pongs cut at every byte boundary arrive the same", async (t) => {
  const m1 = randomBytes(10);
  const m2 = randomBytes(300);
  const stream = Buffer.concat([
    frame({ opcode: BINARY, payload: m1 }),
    frame({ opcode: PING, payload: Buffer.from("are you there") }),
    frame({ opcode: BINARY, payload: m2 }),
    frame({ opcode: PONG, payload: Buffer.alloc(0) }),
    frame({ opcode: BINARY, payload: m1 }),
  ]);
  let good = 0;
  const cuts: number[][] = [everyByte(stream)];
  for (let k = 0; k <= stream.length; k++) cuts.push([k]);
  for (const points of cuts) {
    const end = await serverEnd(t);
    await feed(end, stream, points);
    const ok =
      end.delivered.length === 3 &&
      end.delivered[0]!.equals(m1) &&
      end.delivered[1]!.equals(m2) &&
      end.delivered[2]!.equals(m1) &&
      end.viaWs.length === 0 &&
      end.errors.length === 0 &&
      end.pings.length === 1 &&
      end.pings[0]!.toString() === "are you there" &&
      written(end.wire).some((f) => f.opcode === PONG && f.payload.toString() === "are you there");
    if (ok) good++;
    else t.fail(`cut at ${points.length > 1 ? "every byte" : points[0]}`);
  }
  t.equal(good, cuts.length, `${cuts.length} ways of cutting, every one delivered and answered the ping`);
});

t.test("a message over 64 KiB (64-bit length) cut into a socket's reads", async (t) => {
  const body = randomBytes(WEBSOCKET_OPTIONS.maxPayload);
  const stream = frame({ opcode: BINARY, payload: body });
  for (const points of [[1], [2], [9], [13], [14], [15], [16384, 32768, 49152, 65536], everyByte(stream)]) {
    const end = await serverEnd(t);
    await feed(end, stream, points);
    t.ok(end.delivered.length === 1 && end.delivered[0]!.equals(body), `cut in ${points.length + 1}`);
  }
});

interface Hostile {
  name: string;
  bytes: Buffer;
  /** ws's error code, when it is an error. */
  code?: string;
  /** Close code ws sends back. */
  closeCode?: number;
  /** What ws itself emits as messages once it has the socket back. */
  viaWs?: Array<{ data: string; isBinary: boolean }>;
}

const before = randomBytes(20);
const after = randomBytes(20);
const hostile: Hostile[] = [
  {
    name: "a length over maxPayload",
    bytes: frame({ opcode: BINARY, payload: Buffer.alloc(16), announce: WEBSOCKET_OPTIONS.maxPayload + 1 }),
    code: "WS_ERR_UNSUPPORTED_MESSAGE_LENGTH",
    closeCode: 1009,
  },
  {
    name: "a 64-bit length of 2^53 and more",
    bytes: Buffer.from([0x82, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]),
    code: "WS_ERR_UNSUPPORTED_DATA_PAYLOAD_LENGTH",
    closeCode: 1009,
  },
  {
    name: "an unknown opcode",
    bytes: frame({ opcode: 0x3, payload: Buffer.from("x") }),
    code: "WS_ERR_INVALID_OPCODE",
    closeCode: 1002,
  },
  {
    name: "a continuation without a first fragment",
    bytes: frame({ opcode: CONTINUATION, payload: Buffer.from("x") }),
    code: "WS_ERR_INVALID_OPCODE",
    closeCode: 1002,
  },
  {
    name: "a reserved bit",
    bytes: frame({ opcode: BINARY, payload: Buffer.from("x"), rsv: 0x2 }),
    code: "WS_ERR_UNEXPECTED_RSV_2_3",
    closeCode: 1002,
  },
  {
    name: "RSV1 without compression",
    bytes: frame({ opcode: BINARY, payload: Buffer.from("x"), rsv: 0x4 }),
    code: "WS_ERR_UNEXPECTED_RSV_1",
    closeCode: 1002,
  },
  {
    name: "an unmasked frame from a client",
    bytes: frame({ opcode: BINARY, payload: Buffer.from("x"), masked: false }),
    code: "WS_ERR_EXPECTED_MASK",
    closeCode: 1002,
  },
  {
    name: "a ping over 125 bytes",
    bytes: frame({ opcode: PING, payload: Buffer.alloc(126) }),
    code: "WS_ERR_INVALID_CONTROL_PAYLOAD_LENGTH",
    closeCode: 1002,
  },
  {
    name: "a fragmented ping",
    bytes: frame({ opcode: PING, payload: Buffer.from("x"), fin: false }),
    code: "WS_ERR_EXPECTED_FIN",
    closeCode: 1002,
  },
  {
    name: "a new message inside a fragmented one",
    bytes: Buffer.concat([
      frame({ opcode: BINARY, payload: Buffer.from("ab"), fin: false }),
      frame({ opcode: BINARY, payload: Buffer.from("cd") }),
    ]),
    code: "WS_ERR_INVALID_OPCODE",
    closeCode: 1002,
  },
  {
    name: "a fragmented message (ws joins it, and reads on)",
    bytes: Buffer.concat([
      frame({ opcode: BINARY, payload: Buffer.from("ab"), fin: false }),
      frame({ opcode: PING, payload: Buffer.from("p") }),
      frame({ opcode: CONTINUATION, payload: Buffer.from("cd") }),
    ]),
    viaWs: [
      { data: "abcd", isBinary: true },
      { data: "after", isBinary: true },
    ],
  },
  {
    name: "a text message (ws emits it, the session refuses it)",
    bytes: frame({ opcode: TEXT, payload: Buffer.from("hello") }),
    viaWs: [
      { data: "hello", isBinary: false },
      { data: "after", isBinary: true },
    ],
  },
  {
    name: "a close frame (ws answers it; nothing after it counts)",
    bytes: frame({ opcode: CLOSE, payload: Buffer.from([0x03, 0xe8]) }),
    closeCode: 1000,
    viaWs: [],
  },
];

for (const c of hostile) {
  t.test(`hostile: ${c.name}, whole and one byte at a time`, async (t) => {
    for (const mode of ["whole", "bytes"] as const) {
      const end = await serverEnd(t);
      const trailer = frame({ opcode: BINARY, payload: c.viaWs ? Buffer.from("after") : after });
      const stream = Buffer.concat([frame({ opcode: BINARY, payload: before }), c.bytes, trailer]);
      await feed(end, stream, mode === "whole" ? [] : everyByte(stream));
      t.equal(end.delivered.length, 1, `${mode}: only the message before it was delivered by the fast path`);
      t.ok(end.delivered[0]?.equals(before), `${mode}: and intact`);
      if (c.code !== undefined) {
        t.equal(end.errors[0]?.code, c.code, `${mode}: ws reports ${c.code}`);
      } else {
        t.equal(end.errors.length, 0, `${mode}: no error`);
      }
      t.same(
        end.viaWs.map((m) => ({ data: m.data.toString(), isBinary: m.isBinary })),
        c.viaWs ?? [],
        `${mode}: ws emitted what it read itself`,
      );
      if (c.closeCode !== undefined) {
        const close = written(end.wire).find((f) => f.opcode === CLOSE);
        t.equal(close?.payload.readUInt16BE(0), c.closeCode, `${mode}: ws sent close ${c.closeCode}`);
      }
    }
  });
}

t.test("the connection ending mid-frame delivers nothing of that frame", async (t) => {
  for (const cut of [1, 2, 5, 100]) {
    const end = await serverEnd(t);
    const partial = frame({ opcode: BINARY, payload: randomBytes(200) }).subarray(0, cut);
    await feed(end, Buffer.concat([frame({ opcode: BINARY, payload: before }), partial]), []);
    end.wire.push(null);
    end.wire.end();
    t.equal(await end.closed, 1006, `cut after ${cut} bytes: closed abnormally`);
    t.equal(end.delivered.length, 1, "only the whole message before it");
    t.equal(end.viaWs.length, 0);
  }
});

t.test("a receiver that is not between frames is left to ws", async (t) => {
  const end = await serverEnd(t);
  // Half a header already read by ws: taking the socket now would lose its place.
  const internals = end.ws as unknown as { _receiver: { _bufferedBytes: number } };
  internals._receiver._bufferedBytes = 1;
  t.equal(
    divertDataFrames(end.ws, () => {}),
    false,
  );
  internals._receiver._bufferedBytes = 0;
});
