// The relay of an apiserver body into a tunnel stream (coalesced-relay.ts):
// a body that arrives as 16 KiB pieces, a process.nextTick apart as Node's
// TLS socket hands them over, crosses a real Session in 64 KiB messages
// rather than a message per piece; bytes and order are kept, backpressure
// holds, the end is passed on, and a destination that goes away stops it.
import { PassThrough, Readable, Writable } from "node:stream";
import { Session, type TunnelStream } from "@tether/tunnel";
import t from "tap";
import { relayCoalesced } from "../src/coalesced-relay.js";

const PIECE = 16 * 1024;

/** `pieces` TLS-sized pieces per turn of the event loop, each a tick after the last, for `turns` turns. */
function tlsLikeSource(pieces: number, turns: number): { src: Readable; sent: Buffer[] } {
  const src = new Readable({ read() {} });
  const all: Buffer[] = [];
  let turn = 0;
  const burst = () => {
    let i = 0;
    const next = () => {
      const piece = Buffer.alloc(PIECE, (turn * pieces + i) % 251);
      all.push(piece);
      src.push(piece);
      if (++i < pieces) process.nextTick(next);
      else if (++turn < turns) setImmediate(burst);
      else process.nextTick(() => src.push(null));
    };
    next();
  };
  setImmediate(burst);
  return { src, sent: all };
}

/** Two sessions on an in-memory link; the agent's side (the client) records the size of each message it sends. */
function link(): {
  agentMessages: number[];
  accepted: Promise<TunnelStream>;
  server: Session;
  close(): void;
} {
  const sides: { client?: Session; server?: Session } = {};
  const agentMessages: number[] = [];
  const transport = (to: "client" | "server", record?: number[]) => ({
    send(message: Buffer, done: (err?: Error | null) => void) {
      record?.push(message.length);
      const copy = Buffer.from(message);
      setImmediate(() => {
        sides[to]?.receive(copy);
        done();
      });
    },
    close() {},
  });
  const options = { keepAliveInterval: 0, deadPeerTimeout: 0 };
  sides.client = new Session(transport("server", agentMessages), { ...options, role: "client" });
  sides.server = new Session(transport("client"), { ...options, role: "server" });
  const accepted = new Promise<TunnelStream>((resolve) => sides.client!.once("stream", resolve));
  return {
    agentMessages,
    accepted,
    server: sides.server,
    close: () => {
      sides.client?.close();
      sides.server?.close();
    },
  };
}

t.test("a body of 16 KiB pieces crosses the session in 64 KiB messages, bytes intact", async (t) => {
  const run = async (relay: (src: Readable, dest: TunnelStream) => void) => {
    const l = link();
    const caller = l.server.open("kube");
    caller.end();
    const stream = await l.accepted;
    stream.resume();
    const { src, sent } = tlsLikeSource(4, 8);
    relay(src, stream);
    const received: Buffer[] = [];
    caller.on("data", (c: Buffer) => received.push(c));
    await new Promise((r) => caller.once("end", r));
    l.close();
    const big = l.agentMessages.filter((n) => n >= PIECE);
    return { big, received: Buffer.concat(received), sent: Buffer.concat(sent) };
  };
  const piped = await run((src, dest) => src.pipe(dest));
  const relayed = await run(relayCoalesced);
  t.equal(relayed.received.length, 8 * 4 * PIECE, "every byte arrives");
  t.ok(relayed.received.equals(relayed.sent), "in order");
  t.ok(
    piped.big.every((n) => n < 2 * PIECE),
    `piped as it came, a message per piece (${piped.big.length} messages)`,
  );
  // The session may still split a turn's bytes (its path estimate sizes frames on a loaded machine): the
  // claim is the ratio, not exact sizes.
  t.ok(
    relayed.big.length <= piped.big.length / 2,
    `relayed, a message per turn or so: ${relayed.big.length} messages (${relayed.big.join(", ")}) for ${piped.big.length}`,
  );
});

t.test("a slow destination pauses the source, then gets all of it and the end", async (t) => {
  const src = new PassThrough();
  const got: Buffer[] = [];
  let release: (() => void) | undefined;
  let finished = false;
  const dest = new Writable({
    highWaterMark: PIECE,
    write(chunk: Buffer, _enc, done) {
      got.push(chunk);
      release = done;
    },
    final(done) {
      finished = true;
      done();
    },
  });
  relayCoalesced(src, dest);
  for (let i = 0; i < 8; i++) src.write(Buffer.alloc(PIECE, i));
  src.end();
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  t.equal(got.length, 1, "one write in progress, the rest buffered in the destination");
  t.notOk(finished, "not ended while bytes wait");
  while (!finished) {
    const r = release;
    release = undefined;
    r?.();
    await new Promise((r) => setImmediate(r));
  }
  t.equal(Buffer.concat(got).length, 8 * PIECE, "all of it, then the end");
  t.same(
    got.map((c) => c[0]),
    [0, 1, 2, 3, 4, 5, 6, 7],
    "in order",
  );
});

t.test("backpressure bounds what the relay takes from the source", async (t) => {
  // A destination that never finishes a write: the source must stop flowing, not be read into memory.
  const src = new Readable({ read() {}, highWaterMark: PIECE });
  const dest = new Writable({ highWaterMark: PIECE, write() {} });
  relayCoalesced(src, dest);
  for (let i = 0; i < 4; i++) src.push(Buffer.alloc(PIECE));
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  t.equal(src.isPaused(), true, "the source is paused once the destination is full");
  for (let i = 0; i < 64; i++) src.push(Buffer.alloc(PIECE));
  await new Promise((r) => setImmediate(r));
  t.ok(src.readableLength >= 64 * PIECE, "later bytes wait in the source, unread");
  t.ok(dest.writableLength <= 4 * PIECE, "the destination holds one turn's worth at most");
  src.destroy();
  dest.destroy();
});

t.test("a destination destroyed mid-body stops the relay without a write after it", async (t) => {
  const src = new PassThrough();
  let writesAfter = 0;
  const dest = new Writable({
    write(_chunk, _enc, done) {
      if (dest.destroyed) writesAfter++;
      done();
    },
  });
  dest.on("error", () => {});
  relayCoalesced(src, dest);
  src.write(Buffer.alloc(PIECE));
  dest.destroy();
  src.write(Buffer.alloc(PIECE));
  src.end(Buffer.alloc(PIECE));
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  t.equal(writesAfter, 0, "nothing written to a destroyed destination");
  t.equal(src.isPaused(), true, "the source is left paused, not drained into nothing");
});

t.test("a lone small chunk (a watch event) leaves in the turn it came", async (t) => {
  const src = new PassThrough();
  const got: Buffer[] = [];
  const dest = new Writable({
    write(chunk: Buffer, _enc, done) {
      got.push(chunk);
      done();
    },
  });
  relayCoalesced(src, dest);
  src.write(Buffer.from('{"type":"ADDED"}\n'));
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  t.equal(Buffer.concat(got).toString(), '{"type":"ADDED"}\n', "written without waiting for more");
  src.destroy();
  dest.destroy();
});
