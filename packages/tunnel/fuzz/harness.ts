/**
 * Feeds random, mutated and plausible frames straight into sessions' frame
 * input (Session.receive), with streams being read, written, paused, ended and
 * reset on the side. A session that fails is replaced by a fresh one. Shared
 * by `npm run fuzz` and the fuzz test that runs in every `npm test`.
 *
 * What counts as a finding: an exception escaping receive(), an unhandled
 * rejection or uncaught exception (the callers watch for those), or heap that
 * keeps growing.
 */

import { encodeControl, encodeData, Flag, FrameType, HEADER_SIZE, MAX_FRAME_PAYLOAD } from "../src/frame.js";
import { ResetCode, Session, type Transport, type TunnelStream } from "../src/index.js";
import { encodeOpenHeader } from "../src/open-header.js";

export interface FuzzOptions {
  /** Frames to feed in total. */
  count: number;
  seed?: number;
  /** Called every `progressEvery` frames with the frames fed so far. */
  onProgress?: (frames: number, stats: FuzzStats) => void;
  progressEvery?: number;
}

export interface FuzzStats {
  frames: number;
  messages: number;
  sessions: number;
  /** Sessions that ended, by error code ("clean" for no error). */
  endings: Record<string, number>;
  streamsAccepted: number;
  bytesDelivered: number;
  /** Highest heapUsed + external seen at a progress sample, in bytes. */
  peakMemory: number;
}

/** `message` cut at one to four random points, as views (some pieces may be empty). */
function cut(message: Buffer, random: () => number): Buffer[] {
  const points = Array.from({ length: 1 + Math.floor(random() * 4) }, () =>
    Math.floor(random() * (message.length + 1)),
  ).sort((a, b) => a - b);
  const pieces: Buffer[] = [];
  let from = 0;
  for (const p of points) {
    pieces.push(message.subarray(from, p));
    from = p;
  }
  pieces.push(message.subarray(from));
  return pieces;
}

/** mulberry32: small, fast and good enough to drive a fuzzer reproducibly. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Target {
  session: Session;
  role: "client" | "server";
  /** Highest id the fuzzer opened as the peer. */
  peerId: number;
  open: number[];
  stuck: boolean;
}

const INTERESTING_VALUES = [
  0,
  1,
  2,
  255,
  256,
  65535,
  65536,
  65537,
  131072,
  262144,
  262145,
  2 ** 31 - 1,
  2 ** 31,
  0xffffffff,
];
const SERVICES = ["kubernetes", "svc", "logs", "x"];

export async function fuzz(options: FuzzOptions): Promise<FuzzStats> {
  const random = rng(options.seed ?? 0x7e7e7);
  const int = (n: number) => Math.floor(random() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const stats: FuzzStats = {
    frames: 0,
    messages: 0,
    sessions: 0,
    endings: {},
    streamsAccepted: 0,
    bytesDelivered: 0,
    peakMemory: 0,
  };
  const progressEvery = options.progressEvery ?? 10_000;
  let nextProgress = progressEvery;

  // Random payloads are slices of one pool: generating fresh bytes would dominate the run.
  const pool = Buffer.allocUnsafe(1024 * 1024);
  for (let i = 0; i < pool.length; i++) pool[i] = int(256);
  const bytes = (n: number): Buffer => {
    const start = int(pool.length - n);
    return pool.subarray(start, start + n);
  };

  const handleStream = (stream: TunnelStream) => {
    stats.streamsAccepted++;
    stream.on("error", () => {});
    stream.on("data", (d: Buffer) => {
      stats.bytesDelivered += d.length;
    });
    switch (int(6)) {
      case 0:
        stream.pause();
        break;
      case 1:
        stream.end(bytes(int(3000)));
        break;
      case 2:
        stream.destroy();
        break;
      case 3:
        stream.reset(ResetCode.APPLICATION_MIN + int(10));
        break;
      case 4:
        stream.write(bytes(int(200_000)));
        break;
      default:
      // flowing, open
    }
  };

  const newTarget = (): Target => {
    const role = random() < 0.5 ? ("client" as const) : ("server" as const);
    const stuck = random() < 0.1;
    const transport: Transport = {
      // A stuck transport never finishes a send, as a peer that stopped reading.
      send: (_message, done) => {
        if (!stuck) done();
      },
      close: () => {},
    };
    const accept =
      random() < 0.5 ? undefined : (req: { service: string }) => req.service !== "x" || ResetCode.REFUSED;
    const session = new Session(transport, {
      role,
      keepAliveInterval: 0,
      deadPeerTimeout: 0,
      maxStreams: 1 + int(64),
      transportHighWaterMark: 1 + int(256 * 1024),
      ...(accept ? { accept } : {}),
    });
    stats.sessions++;
    session.on("stream", handleStream);
    session.on("error", () => {});
    session.on("close", (err) => {
      const key = err?.code ?? "clean";
      stats.endings[key] = (stats.endings[key] ?? 0) + 1;
    });
    // Streams the session opens itself, so frames for local ids mean something.
    const open: number[] = [];
    for (let i = int(3); i > 0; i--) {
      const s = session.open(pick(SERVICES));
      open.push(s.id);
      s.on("error", () => {});
      if (random() < 0.5) s.write(bytes(int(100_000)));
      if (random() < 0.5) s.end();
    }
    // peerId + 2 is the peer's next id: odd when the peer is a client, even otherwise.
    return { session, role, peerId: role === "server" ? -1 : 0, open, stuck };
  };

  /** A stream id: usually one the session knows, sometimes anything. */
  const someId = (t: Target): number => {
    const r = random();
    const peerParity = t.role === "server" ? 1 : 0;
    // Mostly streams that exist, so sessions live long enough to reach deep states.
    if (r < 0.9 && t.open.length > 0) return pick(t.open);
    if (r < 0.93) return Math.min(t.peerId + 2, 0xffffffff); // the next one, without a SYN
    if (r < 0.97) return int(40) * 2 + peerParity;
    return pick(INTERESTING_VALUES);
  };

  /** One frame that follows the grammar, with plausible values. */
  const plausible = (t: Target): Buffer => {
    const kind = t.open.length === 0 ? 0 : int(12);
    if (kind < 2) {
      // Open, as the peer.
      const id = random() < 0.9 ? Math.min(t.peerId + 2, 0xffffffff) : someId(t);
      if (id > t.peerId && id % 2 === (t.role === "server" ? 1 : 0)) {
        t.peerId = id;
        t.open.push(id);
        if (t.open.length > 32) t.open.shift();
      }
      const header =
        random() < 0.9
          ? encodeOpenHeader(pick(SERVICES), random() < 0.5 ? { user: "u", n: String(int(9)) } : {})
          : bytes(int(40));
      return encodeData(Flag.SYN | (random() < 0.1 ? Flag.FIN : 0), id, header);
    }
    if (kind < 6) {
      const size = random() < 0.7 ? int(2048) : random() < 0.5 ? MAX_FRAME_PAYLOAD : int(MAX_FRAME_PAYLOAD);
      return encodeData(
        random() < 0.1 ? Flag.FIN : 0,
        someId(t),
        bytes(Math.min(size, 4096)).subarray(0, size),
      );
    }
    if (kind < 8) {
      const flags = pick([0, 0, Flag.ACK, Flag.RST]);
      const value =
        flags === Flag.RST ? 1 + int(300) : random() < 0.8 ? int(300_000) : pick(INTERESTING_VALUES);
      return encodeControl(FrameType.WINDOW_UPDATE, flags, someId(t), value);
    }
    if (kind < 10) return encodeControl(FrameType.PING, pick([Flag.SYN, Flag.ACK]), 0, int(2 ** 32));
    if (kind < 11) return encodeControl(FrameType.GO_AWAY, 0, someId(t), random() < 0.95 ? 0 : int(5));
    return encodeData(0, someId(t), undefined);
  };

  /** Any 12 bytes of header with a payload that may or may not match. */
  const wild = (): Buffer => {
    const header = Buffer.allocUnsafe(HEADER_SIZE);
    header[0] = random() < 0.8 ? 1 : int(256);
    header[1] = random() < 0.9 ? int(4) : int(256);
    header.writeUInt16BE(random() < 0.8 ? int(16) : int(65536), 2);
    header.writeUInt32BE(random() < 0.7 ? int(64) : pick(INTERESTING_VALUES), 4);
    header.writeUInt32BE(random() < 0.7 ? int(2048) : pick(INTERESTING_VALUES), 8);
    return Buffer.concat([header, bytes(int(2048))]);
  };

  const mutate = (frame: Buffer): Buffer => {
    const copy = Buffer.from(frame);
    const r = random();
    if (r < 0.5) {
      for (let i = 1 + int(3); i > 0; i--) copy[int(copy.length)] = int(256);
      return copy;
    }
    if (r < 0.75) return copy.subarray(0, int(copy.length));
    return Buffer.concat([copy, bytes(1 + int(20))]);
  };

  let target = newTarget();
  const memory = () => {
    const m = process.memoryUsage();
    return m.heapUsed + m.external;
  };
  stats.peakMemory = memory();

  while (stats.frames < options.count) {
    if (target.session.closed) target = newTarget();
    // One message of one to four frames.
    const parts: Buffer[] = [];
    for (let n = random() < 0.8 ? 1 : 2 + int(3); n > 0; n--) {
      const r = random();
      parts.push(r < 0.8 ? plausible(target) : r < 0.92 ? mutate(plausible(target)) : wild());
    }
    stats.frames += parts.length;
    stats.messages++;
    const message = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    // Half the messages come as the pieces a socket's reads would cut them into (ws-receive.ts).
    target.session.receive(random() < 0.5 ? message : cut(message, random));
    // Let stream callbacks, pumps and resets run now and then.
    if (stats.messages % 64 === 0) await new Promise((r) => setImmediate(r));
    if (random() < 0.002) target.session.close();
    if (stats.frames >= nextProgress) {
      nextProgress += progressEvery;
      stats.peakMemory = Math.max(stats.peakMemory, memory());
      options.onProgress?.(stats.frames, stats);
    }
  }
  target.session.close();
  await new Promise((r) => setImmediate(r));
  stats.peakMemory = Math.max(stats.peakMemory, memory());
  return stats;
}
