import { isDeepStrictEqual } from "node:util";
import fc from "fast-check";
import t from "tap";
import {
  checkHeader,
  encodeControl,
  encodeData,
  encodeFrame,
  Flag,
  type Frame,
  FrameType,
  HEADER_SIZE,
  MAX_FRAME_PAYLOAD,
  MAX_MESSAGE_SIZE,
  PROTOCOL_VERSION,
  parseFrames,
} from "../src/frame.js";

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const streamId = fc.integer({ min: 1, max: 0xffffffff });

/** Frames that checkHeader accepts, of every type. */
const validFrame: fc.Arbitrary<Frame> = fc.oneof(
  fc
    .record({
      type: fc.constant(FrameType.DATA),
      flags: fc.constantFrom(0, Flag.SYN, Flag.FIN, Flag.SYN | Flag.FIN),
      streamId,
      payload: fc.uint8Array({ maxLength: 2048 }).map((a) => Buffer.from(a)),
    })
    .map((f) => ({ ...f, length: f.payload.length })),
  fc.record({
    type: fc.constant(FrameType.WINDOW_UPDATE),
    flags: fc.constantFrom(0, Flag.ACK),
    streamId,
    length: u32,
  }),
  fc.record({
    type: fc.constant(FrameType.WINDOW_UPDATE),
    flags: fc.constant(Flag.RST),
    streamId,
    length: fc.integer({ min: 1, max: 0xffffffff }),
  }),
  fc.record({
    type: fc.constant(FrameType.PING),
    flags: fc.constantFrom(Flag.SYN, Flag.ACK),
    streamId: fc.constant(0),
    length: u32,
  }),
  fc.record({ type: fc.constant(FrameType.GO_AWAY), flags: fc.constant(0), streamId: fc.nat(), length: u32 }),
);

t.test("frames round-trip through encode and parse, several to a message", async (t) => {
  fc.assert(
    fc.property(fc.array(validFrame, { minLength: 1, maxLength: 8 }), (frames) => {
      const message = Buffer.concat(frames.map(encodeFrame));
      const parsed: Frame[] = [];
      const problem = parseFrames(message, (f) => {
        parsed.push(f.payload ? { ...f, payload: Buffer.from(f.payload) } : f);
        return true;
      });
      if (problem !== undefined) throw new Error(problem);
      if (
        !isDeepStrictEqual(
          parsed,
          frames.map((f) => ({ ...f })),
        )
      )
        throw new Error("frames differ after a round trip");
    }),
    { numRuns: 300 },
  );
  t.pass("300 random frame sequences round-tripped");
});

t.test("the header layout is the documented one", async (t) => {
  const f = encodeControl(FrameType.WINDOW_UPDATE, Flag.ACK, 0x01020304, 0x0a0b0c0d);
  t.same([...f], [PROTOCOL_VERSION, 1, 0, 2, 1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d]);
  const d = encodeData(Flag.FIN, 3, Buffer.from("hi"));
  t.equal(d.length, HEADER_SIZE + 2);
  t.equal(d.readUInt32BE(8), 2);
  t.equal(d.subarray(HEADER_SIZE).toString(), "hi");
});

t.test("headers that can never be valid are rejected with a reason", async (t) => {
  const bad: Array<[number, number, number, number, number, RegExp]> = [
    [0, 0, 0, 1, 0, /version/],
    [1, 4, 0, 1, 0, /unknown frame type/],
    [1, 0, 0x10, 1, 0, /unknown flags/],
    [1, 0, 0, 0, 0, /stream 0/],
    [1, 0, Flag.ACK, 1, 0, /ACK or RST/],
    [1, 0, Flag.RST, 1, 0, /ACK or RST/],
    [1, 0, 0, 1, MAX_FRAME_PAYLOAD + 1, /exceeds/],
    [1, 1, 0, 0, 1, /stream 0/],
    [1, 1, Flag.SYN, 1, 1, /invalid flags/],
    [1, 1, Flag.ACK | Flag.RST, 1, 1, /invalid flags/],
    [1, 1, Flag.RST, 1, 0, /without a code/],
    [1, 2, Flag.SYN, 1, 0, /on a stream/],
    [1, 2, 0, 0, 0, /exactly one/],
    [1, 2, Flag.SYN | Flag.ACK, 0, 0, /exactly one/],
    [1, 3, Flag.FIN, 0, 0, /flags/],
  ];
  for (const [version, type, flags, id, length, reason] of bad) {
    t.match(
      checkHeader(version, type, flags, id, length),
      reason,
      `${version}/${type}/${flags}/${id}/${length}`,
    );
  }
});

t.test("messages that are empty, truncated or too large are rejected", async (t) => {
  const visit = () => true;
  t.match(parseFrames(Buffer.alloc(0), visit), /empty/);
  t.match(parseFrames(Buffer.alloc(MAX_MESSAGE_SIZE + 1), visit), /exceeds/);
  t.match(
    parseFrames(encodeControl(FrameType.PING, Flag.SYN, 0, 1).subarray(0, 11), visit),
    /truncated frame header/,
  );
  t.match(parseFrames(encodeData(0, 1, Buffer.alloc(10)).subarray(0, 20), visit), /truncated data payload/);
  const two = Buffer.concat([
    encodeControl(FrameType.PING, Flag.SYN, 0, 1),
    encodeControl(FrameType.PING, Flag.SYN, 0, 2),
  ]);
  let seen = 0;
  t.equal(
    parseFrames(two, () => {
      seen++;
      return false;
    }),
    undefined,
  );
  t.equal(seen, 1, "a visitor returning false stops the walk");
});

/** What parseFrames saw: each frame with its payload joined, and the reason it stopped. */
function walk(message: Buffer | Buffer[]): { frames: Frame[]; problem: string | undefined } {
  const frames: Frame[] = [];
  const problem = parseFrames(message, (f) => {
    const { pieces, payload, ...rest } = f;
    const bytes = payload ?? (pieces === undefined ? undefined : Buffer.concat(pieces));
    frames.push(bytes === undefined ? rest : { ...rest, payload: Buffer.from(bytes) });
    return true;
  });
  return { frames, problem };
}

/** `bytes` cut at `points` (sorted, within bounds) into views. */
function cutAt(bytes: Buffer, points: number[]): Buffer[] {
  const pieces: Buffer[] = [];
  let from = 0;
  for (const p of points) {
    pieces.push(bytes.subarray(from, p));
    from = p;
  }
  pieces.push(bytes.subarray(from));
  return pieces;
}

t.test("a message given as parts parses as the whole message does, cut anywhere", async (t) => {
  const message = Buffer.concat([
    encodeControl(FrameType.PING, Flag.SYN, 0, 7),
    encodeData(Flag.SYN, 1, Buffer.from("open header")),
    encodeData(0, 1, Buffer.alloc(40, 0xab)),
    encodeControl(FrameType.WINDOW_UPDATE, 0, 1, 1000),
    encodeData(Flag.FIN, 1, undefined),
  ]);
  const whole = walk(message);
  t.equal(whole.problem, undefined);
  t.equal(whole.frames.length, 5);
  let same = 0;
  for (let a = 0; a <= message.length; a++) {
    for (let b = a; b <= message.length; b += 7) {
      if (isDeepStrictEqual(walk(cutAt(message, [a, b])), whole)) same++;
    }
  }
  let cuts = 0;
  for (let a = 0; a <= message.length; a++) for (let b = a; b <= message.length; b += 7) cuts++;
  t.equal(same, cuts, `all ${cuts} ways of cutting it in three (at every byte for the first cut) agree`);
  // One byte per part: every header straddles, every payload is in pieces.
  const bytes = cutAt(
    message,
    Array.from({ length: message.length - 1 }, (_, i) => i + 1),
  );
  t.same(walk(bytes), whole, "one byte per part");
  let viewed = 0;
  parseFrames(cutAt(message, [30, 60]), (f) => {
    for (const piece of f.pieces ?? []) if (piece.buffer === message.buffer) viewed++;
    return true;
  });
  t.ok(viewed >= 2, "a payload across parts comes as views of them, not a copy");
});

t.test("any bytes, cut anywhere, give what they give whole: frames and the reason to stop", async (t) => {
  fc.assert(
    fc.property(
      fc.oneof(
        fc.array(validFrame, { minLength: 1, maxLength: 6 }).map((fs) => Buffer.concat(fs.map(encodeFrame))),
        fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
      ),
      fc.array(fc.nat(), { maxLength: 5 }),
      (message, cuts) => {
        const points = cuts.map((c) => c % (message.length + 1)).sort((a, b) => a - b);
        return isDeepStrictEqual(walk(cutAt(message, points)), walk(message));
      },
    ),
    { numRuns: 2000 },
  );
  t.match(walk([Buffer.alloc(0), Buffer.alloc(0)]).problem, /empty/, "only empty parts: an empty message");
  t.match(
    walk([Buffer.alloc(MAX_MESSAGE_SIZE), Buffer.alloc(1)]).problem,
    /exceeds/,
    "parts adding up past the message limit",
  );
});

t.test("random bytes never throw, they parse or are rejected", async (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      parseFrames(Buffer.from(bytes), () => true);
    }),
    { numRuns: 2000 },
  );
  t.pass();
});
