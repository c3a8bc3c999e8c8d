import { randomBytes } from "node:crypto";
import { once } from "node:events";
import fc from "fast-check";
import t from "tap";
import type { WebSocket } from "ws";
import { HEADER_SIZE, MAX_MESSAGE_SIZE } from "../src/frame.js";
import { HEADROOM, pooledFrame, releaseFrame } from "../src/frame-pool.js";
import { CARRY_MAX, type CarryWrite, type Done, RecordCarry, TLS_RECORD } from "../src/record-carry.js";
import { socketSender } from "../src/ws-send.js";
import { TLS13_OVERHEAD, tlsSockets } from "./lib/tls-websocket.js";

// ---- RecordCarry alone ----

/** A message of `size` bytes numbered from `first`, with `room` free bytes in front of it in its memory. */
function message(size: number, room: number, first: number): Buffer {
  const m = Buffer.from(new ArrayBuffer(room + size), room, size);
  for (let i = 0; i < size; i++) m[i] = (first + i) & 0xff;
  return m;
}

t.test(
  "RecordCarry: any bursts of messages come out whole, in order, and record-aligned while more follow",
  (t) => {
    const burst = fc.array(
      fc.record({
        // The WebSocket frame sizes the writer can see: up to a full message and its largest header.
        size: fc.oneof(
          fc.integer({ min: 0, max: MAX_MESSAGE_SIZE + 14 }),
          fc.constantFrom(0, 1, 26, CARRY_MAX, TLS_RECORD, 4 * TLS_RECORD, MAX_MESSAGE_SIZE + 14),
        ),
        room: fc.constantFrom(0, 14, HEADROOM - 10),
      }),
      { minLength: 1, maxLength: 40 },
    );
    fc.assert(
      fc.property(fc.array(burst, { minLength: 1, maxLength: 4 }), (bursts) => {
        const carry = new RecordCarry();
        const written: Buffer[] = [];
        const doneOrder: number[] = [];
        let sent = 0;
        let bytesIn = 0;
        const expected: Buffer[] = [];
        const out = (w: CarryWrite | undefined, last: boolean) => {
          if (w === undefined) return;
          if (!last && w.bytes.length % TLS_RECORD !== 0) {
            // Unaligned while more follow only when the part past the boundary was too big to hold.
            if (w.bytes.length % TLS_RECORD <= CARRY_MAX)
              throw new Error(`unaligned write of ${w.bytes.length}`);
          }
          written.push(Buffer.from(w.bytes));
          for (const done of w.dones) done();
        };
        for (const b of bursts) {
          for (let i = 0; i < b.length; i++) {
            const m = message(b[i]!.size, b[i]!.room, bytesIn);
            bytesIn += m.length;
            expected.push(Buffer.from(m));
            const n = sent++;
            const done: Done = () => {
              doneOrder.push(n);
              // Its last byte has gone out: everything up to and including it is written.
              const total = written.reduce((a, w) => a + w.length, 0);
              const upTo = expected.slice(0, n + 1).reduce((a, e) => a + e.length, 0);
              if (total < upTo) throw new Error(`message ${n} done with ${total} of ${upTo} bytes written`);
            };
            const last = i === b.length - 1;
            out(carry.take(m, b[i]!.room, done, !last), last);
          }
          if (carry.holding) throw new Error("a tail is held after the last message of a burst");
          if (carry.flush() !== undefined) throw new Error("flush found a tail");
        }
        const all = Buffer.concat(written);
        const want = Buffer.concat(expected);
        if (!all.equals(want)) throw new Error("bytes changed, lost or reordered");
        if (doneOrder.length !== sent || doneOrder.some((n, i) => n !== i)) {
          throw new Error(`dones ran as ${doneOrder.join(",")}`);
        }
      }),
      { numRuns: 300 },
    );
    t.pass("300 runs");
    t.end();
  },
);

t.test("RecordCarry: full messages carry a growing tail, then write it whole once past CARRY_MAX", (t) => {
  const carry = new RecordCarry();
  const size = MAX_MESSAGE_SIZE + 14; // a client's full message: 26 bytes past four records
  const lengths: number[] = [];
  let holdCopies = 0;
  for (let i = 0; i < 200; i++) {
    const m = message(size, HEADROOM - 14, 0);
    const w = carry.take(m, HEADROOM - 14, () => {}, true);
    if (w !== undefined) {
      lengths.push(w.bytes.length);
      // In the pool's headroom: the write is a view of the message's own memory, not a join.
      if (w.bytes.buffer === m.buffer) holdCopies++;
    }
  }
  const unaligned = lengths.filter((n) => n % TLS_RECORD !== 0);
  t.ok(unaligned.length > 0 && unaligned.length <= 3, `${unaligned.length} of 200 writes end off a boundary`);
  t.ok(
    unaligned.every((n) => n % TLS_RECORD > CARRY_MAX),
    "only when the tail outgrew CARRY_MAX",
  );
  t.equal(holdCopies, 200, "every write used the room in front of its message");
  const last = carry.flush();
  t.ok(last !== undefined && last.bytes.length <= CARRY_MAX, "flush hands back what is held");
  t.notOk(carry.holding, "and holds nothing after");
  t.end();
});

t.test("RecordCarry: short messages are held whole and ride with the next", (t) => {
  const carry = new RecordCarry();
  const order: string[] = [];
  t.equal(
    carry.take(message(24, 0, 0), 0, () => order.push("a"), true),
    undefined,
    "a 24-byte message waits",
  );
  t.equal(
    carry.take(message(24, 0, 24), 0, () => order.push("b"), true),
    undefined,
    "so does the next",
  );
  const w = carry.take(message(100, 0, 48), 0, () => order.push("c"), false);
  t.equal(w?.bytes.length, 148, "the last goes out with both in front");
  t.same([...w!.bytes].slice(0, 148), [...message(148, 0, 0)], "in order");
  for (const done of w!.dones) done();
  t.same(order, ["a", "b", "c"], "dones in order, once written");
  t.end();
});

// ---- over a real TLS socket ----

/** A message of `size` bytes of random content: from the frame pool (written in place) or not. */
function outgoing(size: number, pooled: boolean): Buffer {
  if (pooled && size >= HEADER_SIZE) {
    const m = pooledFrame(size - HEADER_SIZE);
    randomBytes(size).copy(m);
    return m;
  }
  return randomBytes(size);
}

/** Sends `messages` in one burst through the direct socket sender; resolves with each done's error. */
function sendBurst(ws: WebSocket, messages: Buffer[]): Promise<Array<Error | null | undefined>> {
  const sender = socketSender(ws)!;
  return sendWith(sender, messages);
}

function sendWith(
  sender: NonNullable<ReturnType<typeof socketSender>>,
  messages: Buffer[],
): Promise<Array<Error | null | undefined>> {
  return Promise.all(
    messages.map(
      (m) =>
        new Promise<Error | null | undefined>((resolve) =>
          sender.send(m, (err) => {
            // As the session does: the pool may hand the buffer out again at once.
            releaseFrame(m);
            resolve(err);
          }),
        ),
    ),
  );
}

/** Resolves with the first `count` binary messages `ws` receives, or rejects on an error. */
function receive(ws: WebSocket, count: number): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    const onMessage = (data: Buffer) => {
      got.push(data);
      if (got.length === count) {
        ws.off("message", onMessage);
        resolve(got);
      }
    };
    ws.on("message", onMessage);
    ws.once("error", reject);
    ws.once("close", (code) => reject(new Error(`closed with ${code} after ${got.length} messages`)));
  });
}

/** Waits until the sender holds a tail back, or gives up after `turns` event-loop turns. */
async function untilHolding(sender: { holding: boolean }, turns = 10_000): Promise<boolean> {
  for (let i = 0; i < turns && !sender.holding; i++) await new Promise((r) => setImmediate(r));
  return sender.holding;
}

const FULL = MAX_MESSAGE_SIZE; // 12-byte frame header + 64 KiB payload
/**
 * A client message one byte past three records with its 8-byte header (a
 * 16-bit length and the mask): the held tail grows a byte per message, so
 * every write of a burst but the first holds one back. The burst is longer
 * than the loopback's socket buffers can take, so a stalled relay stalls it.
 */
const ONE_PAST = 3 * TLS_RECORD + 1 - 8;

for (const role of ["client", "server"] as const) {
  t.test(`over TLS the ${role} ends its writes on record boundaries while messages are queued`, async (t) => {
    const ends = await tlsSockets(t);
    const from = ends[role];
    const to = role === "client" ? ends.server : ends.client;
    const tap = role === "client" ? ends.toServer : ends.toClient;
    t.type(socketSender(from), "object", "the installed ws lets us write to its socket");
    const count = 24;
    const messages = Array.from({ length: count }, () => outgoing(FULL, true));
    const copies = messages.map((m) => Buffer.from(m));
    await new Promise((r) => setTimeout(r, 50)); // let the TLS 1.3 session tickets go by first
    tap.reset();
    const arrived = receive(to, count);
    const errors = await sendBurst(from, messages);
    const got = await arrived;
    t.same(errors, Array(count).fill(undefined), "every message was written");
    t.ok(
      got.every((m, i) => m.equals(copies[i]!)),
      `all ${count} messages arrived unchanged and in order, the last without anything sent after it`,
    );
    const wsHeader = role === "client" ? 14 : 10;
    const total = count * (FULL + wsHeader);
    const plain = tap.lengths.map((n) => n - TLS13_OVERHEAD);
    const short = plain.filter((n) => n < TLS_RECORD);
    t.equal(
      plain.reduce((a, n) => a + n, 0),
      total,
      "the records carry exactly the frames",
    );
    // The first message goes out alone (nothing is queued behind it yet), then every write is aligned.
    t.ok(
      plain.length <= Math.ceil(total / TLS_RECORD) + 1,
      `${plain.length} records for ${count} messages of ${FULL + wsHeader} bytes (5 each unaligned: ${5 * count})`,
    );
    t.ok(short.length <= 2, `${short.length} short records: the first message's and the burst's last tail`);
    // The first message was written as it came (4 records and a short one), every later write on a boundary.
    const rest = (total - (FULL + wsHeader)) % TLS_RECORD;
    t.equal(plain[plain.length - 1], rest || TLS_RECORD, "the burst ends with its tail, not held");
  });
}

t.test("over TLS any bursts of messages (0..65548 bytes) arrive whole and in order", async (t) => {
  const ends = await tlsSockets(t);
  const size = fc.oneof(
    fc.integer({ min: 0, max: MAX_MESSAGE_SIZE }),
    fc.constantFrom(0, 1, HEADER_SIZE, 1000, TLS_RECORD - 14, MAX_MESSAGE_SIZE - 26, MAX_MESSAGE_SIZE),
  );
  const burst = fc.array(fc.record({ size, pooled: fc.boolean() }), { minLength: 1, maxLength: 24 });
  let runs = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom("client", "server"),
      fc.array(burst, { minLength: 1, maxLength: 3 }),
      async (role, bursts) => {
        runs++;
        const from = ends[role as "client" | "server"];
        const to = role === "client" ? ends.server : ends.client;
        for (const b of bursts) {
          const messages = b.map(({ size, pooled }) => outgoing(size, pooled));
          const copies = messages.map((m) => Buffer.from(m));
          const arrived = receive(to, messages.length);
          const errors = await sendBurst(from, messages);
          const got = await arrived;
          if (errors.some((e) => e)) throw new Error(`write failed: ${errors.find((e) => e)}`);
          got.forEach((m, i) => {
            if (!m.equals(copies[i]!))
              throw new Error(`message ${i} of ${got.length} (${copies[i]!.length} bytes) changed`);
          });
        }
      },
    ),
    { numRuns: 40 },
  );
  t.equal(runs, 40, "40 runs over one TLS connection, both directions");
  t.notOk(socketSender(ends.client)?.holding, "nothing is held once the bursts are through");
});

t.test("a ping and a pong ws sends while a tail is held go out between frames, not inside one", async (t) => {
  const ends = await tlsSockets(t);
  const sender = socketSender(ends.client)!;
  const count = 300;
  const messages = Array.from({ length: count }, () => outgoing(ONE_PAST, true));
  const copies = messages.map((m) => Buffer.from(m));
  let beforePing = -1;
  let beforePong = -1;
  let received = 0;
  ends.server.on("message", () => received++);
  ends.server.once("ping", () => (beforePing = received));
  ends.server.once("pong", () => (beforePong = received));
  const arrived = receive(ends.server, count);
  ends.stallToServer(true);
  const sent = sendWith(sender, messages);
  t.ok(await untilHolding(sender), "a tail is held back");
  ends.client.ping(Buffer.from("p"));
  ends.client.pong(Buffer.from("q"));
  ends.stallToServer(false);
  t.same(await sent, Array(count).fill(undefined), "every message was written");
  const got = await arrived;
  t.ok(
    got.every((m, i) => m.equals(copies[i]!)),
    "every message arrived whole: nothing landed inside one",
  );
  t.ok(beforePing >= 0 && beforePing < count, `the ping arrived after ${beforePing} of ${count} messages`);
  t.ok(beforePong >= 0 && beforePong < count, `the pong arrived after ${beforePong} of ${count} messages`);
  t.notOk(sender.holding, "nothing held at the end");
});

t.test(
  "ws's automatic pong to the peer's ping, while a tail is held, waits for the frame to finish",
  async (t) => {
    const ends = await tlsSockets(t);
    const sender = socketSender(ends.client)!;
    const count = 300;
    const messages = Array.from({ length: count }, () => outgoing(ONE_PAST, true));
    const copies = messages.map((m) => Buffer.from(m));
    let received = 0;
    let beforePong = -1;
    ends.server.on("message", () => received++);
    ends.server.on("pong", (data: Buffer) => {
      if (data.toString() === "auto") beforePong = received;
    });
    const pinged = once(ends.client, "ping");
    const arrived = receive(ends.server, count);
    ends.stallToServer(true);
    const sent = sendWith(sender, messages);
    t.ok(await untilHolding(sender), "a tail is held back");
    ends.server.ping(Buffer.from("auto")); // the other direction still flows
    await pinged;
    t.ok(sender.holding, "the client answered the ping while the tail was held");
    ends.stallToServer(false);
    t.same(await sent, Array(count).fill(undefined), "every message was written");
    const got = await arrived;
    t.ok(
      got.every((m, i) => m.equals(copies[i]!)),
      "every message arrived whole",
    );
    t.ok(beforePong >= 0 && beforePong < count, `the pong arrived after ${beforePong} of ${count} messages`);
  },
);

t.test("ws.close() while a tail is held: the close frame follows a whole frame", async (t) => {
  const ends = await tlsSockets(t);
  const sender = socketSender(ends.client)!;
  const count = 300;
  const messages = Array.from({ length: count }, () => outgoing(ONE_PAST, true));
  const copies = messages.map((m) => Buffer.from(m));
  const got: Buffer[] = [];
  ends.server.on("message", (m: Buffer) => got.push(m));
  let serverError: Error | undefined;
  ends.server.on("error", (err) => (serverError = err));
  const closed = once(ends.server, "close");
  ends.stallToServer(true);
  const sent = sendWith(sender, messages);
  t.ok(await untilHolding(sender), "a tail is held back");
  ends.client.close(1000, "bye");
  ends.stallToServer(false);
  const [code] = (await closed) as [number];
  await sent;
  t.equal(code, 1000, "the server read a clean close, not a protocol error");
  t.equal(serverError, undefined, "and no framing error");
  t.ok(got.length > 0 && got.length < count, `${got.length} messages arrived before the close`);
  t.ok(
    got.every((m, i) => m.equals(copies[i]!)),
    "each of them whole",
  );
});

t.test("flushed() waits for a held tail: a graceful close lets every message out first", async (t) => {
  const ends = await tlsSockets(t);
  const sender = socketSender(ends.client)!;
  const count = 300;
  const messages = Array.from({ length: count }, () => outgoing(ONE_PAST, true));
  const copies = messages.map((m) => Buffer.from(m));
  const arrived = receive(ends.server, count);
  const closed = once(ends.server, "close");
  ends.stallToServer(true);
  const sent = sendWith(sender, messages);
  t.ok(await untilHolding(sender), "a tail is held back");
  let flushedEarly = false;
  sender.flushed(() => {
    flushedEarly = sender.holding;
    ends.client.close(1000);
  });
  t.ok(sender.holding, "flushed() did not run while the tail is held");
  ends.stallToServer(false);
  const got = await arrived;
  t.ok(got.length === count && got.every((m, i) => m.equals(copies[i]!)), "all messages arrived whole");
  t.equal(((await closed) as [number])[0], 1000, "then the close");
  t.notOk(flushedEarly, "flushed() ran with nothing held");
  await sent;
});

t.test("terminate() while a tail is held: every done runs, the written ones without error", async (t) => {
  const ends = await tlsSockets(t);
  ends.server.on("error", () => {});
  const sender = socketSender(ends.client)!;
  const count = 300;
  const messages = Array.from({ length: count }, () => outgoing(ONE_PAST, true));
  ends.stallToServer(true);
  const sent = sendWith(sender, messages);
  t.ok(await untilHolding(sender), "a tail is held back");
  ends.client.terminate();
  const errors = await sent;
  t.equal(errors.length, count, "every done ran");
  const failed = errors.findIndex((e) => e);
  t.ok(failed > 0, `the first ${failed} were written`);
  t.ok(
    errors.slice(failed).every((e) => e),
    "none after the first failure claims success",
  );
});
