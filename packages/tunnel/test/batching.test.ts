// Small frames one pump pass produces leave as one message (session.ts), on
// a real session pair: what a GET costs in tunnel messages each way, that a
// lone frame is not held back, and that large Data frames are never copied
// into a batch.
import { once } from "node:events";
import t from "tap";
import { Flag, FrameType, HEADER_SIZE } from "../src/frame.js";
import { isPooled } from "../src/frame-pool.js";
import type { Session, Transport, TunnelStream } from "../src/index.js";
import { pair, readAll } from "./lib/pair.js";

interface Seen {
  type: number;
  flags: number;
  streamId: number;
  length: number;
}

interface Message {
  frames: Seen[];
  bytes: number;
  pooled: boolean;
}

/** Records every message `session` hands its transport, split into its frames. */
function record(session: Session): Message[] {
  const messages: Message[] = [];
  const transport = (session as unknown as { transport: Transport }).transport;
  const send = transport.send.bind(transport);
  transport.send = (message, done) => {
    const frames: Seen[] = [];
    let o = 0;
    while (o + HEADER_SIZE <= message.length) {
      const type = message[o + 1]!;
      const length = message.readUInt32BE(o + 8);
      frames.push({
        type,
        flags: message.readUInt16BE(o + 2),
        streamId: message.readUInt32BE(o + 4),
        length,
      });
      o += HEADER_SIZE + (type === FrameType.DATA ? length : 0);
    }
    messages.push({ frames, bytes: message.length, pooled: isPooled(message) });
    send(message, done);
  };
  return messages;
}

const noop = () => {};

const finished = (s: TunnelStream) =>
  s.writableFinished ? Promise.resolve() : once(s, "finish").then(() => {});

const describe = (m: Message) =>
  m.frames.map((f) => `${f.type}/${f.flags}/${f.streamId}/${f.length}`).join(" ");

t.test("a GET costs one message each way: open, head and end; then ACK, answer and end", async (t) => {
  const link = pair();
  const toAgent = record(link.server);
  const toServer = record(link.client);
  const request = Buffer.from('{"method":"GET","path":"/api"}');
  const response = Buffer.from('{"status":200}{"kind":"APIVersions"}');
  link.client.on("stream", (stream: TunnelStream) => {
    readAll(stream).then(() => {
      // The answer as the agent writes it: head and body, then the end, in one turn.
      stream.write(response.subarray(0, 14));
      stream.write(response.subarray(14));
      stream.end();
    });
  });
  const stream = link.server.open("kube");
  stream.write(request);
  stream.end();
  const answer = await readAll(stream);
  t.same(answer, response, "the answer arrives whole");
  t.ok(stream.writableFinished, "the request's end went out");

  t.equal(toAgent.length, 1, `one message to the agent (${toAgent.map(describe).join(" | ")})`);
  // A new stream's extra receive credit (session.ts open) rides along too; it is not what is counted.
  const sent = toAgent[0]!.frames.filter((f) => !(f.type === FrameType.WINDOW_UPDATE && f.flags === 0));
  t.same(
    sent.map((f) => [f.type, f.flags]),
    [
      [FrameType.DATA, Flag.SYN],
      [FrameType.DATA, Flag.FIN],
    ],
    "the open, then the head with the FIN riding on it",
  );
  t.equal(sent[1]!.length, request.length, "the FIN frame carries the head");

  t.equal(toServer.length, 1, `one message back (${toServer.map(describe).join(" | ")})`);
  const back = toServer[0]!.frames;
  t.same(
    back.map((f) => [f.type, f.flags]),
    [
      [FrameType.WINDOW_UPDATE, Flag.ACK],
      [FrameType.DATA, Flag.FIN],
    ],
    "the ACK goes with the answer, whose one frame carries the FIN",
  );
  t.equal(back[1]!.length, response.length, "head and body joined in one frame");
  t.equal(link.server.streamCount, 0, "the stream is retired on both sides");
  t.equal(link.client.streamCount, 0);
  link.client.close();
});

t.test("a stream whose opener is still writing is acknowledged at once, with its credit", async (t) => {
  const link = pair();
  const toServer = record(link.client);
  const accepted = new Promise<TunnelStream>((resolve) => link.client.on("stream", resolve));
  const stream = link.server.open("kube");
  stream.write(Buffer.from("head"));
  const remote = await accepted;
  remote.resume();
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  t.equal(toServer.length, 1, "the ACK left without waiting for an answer");
  t.equal(toServer[0]!.frames[0]!.flags, Flag.ACK);
  t.ok((stream as unknown as { acked: boolean }).acked, "the opener saw it");
  stream.end();
  remote.end();
  await readAll(stream);
  link.client.close();
});

t.test(
  "a stream reset before it answered is acknowledged first: the code is not 'never taken'",
  async (t) => {
    const link = pair();
    const toServer = record(link.client);
    link.client.on("stream", (s: TunnelStream) => {
      s.resume();
      s.on("end", () => s.reset(0x1234));
    });
    const stream = link.server.open("kube");
    stream.end(Buffer.from("x"));
    stream.resume();
    const err = await new Promise<Error & { resetCode?: number }>((resolve) => stream.on("error", resolve));
    t.equal(err.resetCode, 0x1234, "the opener gets the application's code");
    const frames = toServer.flatMap((m) => m.frames);
    t.same(
      frames.map((f) => f.flags),
      [Flag.ACK, Flag.RST],
      "ACK, then RST, in that order",
    );
    link.client.close();
  },
);

t.test("a frame produced alone goes out in the same tick", async (t) => {
  const link = pair();
  const toAgent = record(link.server);
  link.client.on("stream", (s: TunnelStream) => s.resume().on("error", () => {}));
  const stream = link.server.open("kube").on("error", () => {});
  let inTick = 0;
  // process.nextTick callbacks and microtasks run before any I/O or timer of the next loop turn.
  await new Promise<void>((resolve) => setImmediate(resolve));
  inTick = toAgent.length;
  t.equal(inTick, 1, "the open left before the loop turned");
  stream.write(Buffer.from("late"));
  await new Promise<void>((resolve) => setImmediate(resolve));
  t.equal(toAgent.length, 2, "a later write is its own message, not held for company");
  link.client.close();
});

t.test("large Data frames are never copied into a batch; small frames around them are", async (t) => {
  const link = pair();
  const toAgent = record(link.server);
  link.client.on("stream", (s: TunnelStream) => s.resume().on("error", noop));
  const small = link.server.open("kube").on("error", noop);
  const bulk = link.server.open("kube").on("error", noop);
  // One turn: two opens, a small write, a 48 KiB write, another small write on the first stream.
  small.write(Buffer.alloc(100, 1));
  bulk.write(Buffer.alloc(48 * 1024, 2));
  small.write(Buffer.alloc(100, 3));
  small.end();
  bulk.end();
  await Promise.all([finished(small), finished(bulk)]);
  for (const m of toAgent) {
    const big = m.frames.find((f) => f.type === FrameType.DATA && f.length >= 4096);
    if (big === undefined) continue;
    t.equal(m.frames.length, 1, "a large frame travels alone");
    t.ok(m.pooled, "in its own pooled buffer, not a copy");
  }
  const bulkFrames = toAgent
    .flatMap((m) => m.frames)
    .filter((f) => f.streamId === bulk.id && f.length >= 4096);
  t.ok(bulkFrames.length >= 1, `the large write went in ${bulkFrames.length} large frames`);
  const opens = toAgent.filter((m) => m.frames.some((f) => f.flags === Flag.SYN));
  t.equal(opens.length, 1, "both opens and the first small write share one message");
  t.ok(toAgent.length <= bulkFrames.length + 2, `few messages in all (${toAgent.map(describe).join(" | ")})`);
  link.client.close();
});

t.test("a batch never exceeds the message size limit", async (t) => {
  const link = pair();
  const toAgent = record(link.server);
  link.client.on("stream", (s: TunnelStream) => s.resume().on("error", noop));
  const streams: TunnelStream[] = [];
  // 40 streams with 3 KiB each in one turn: 120 KiB of small frames, more than one message holds.
  for (let i = 0; i < 40; i++) {
    const s = link.server.open("kube").on("error", noop);
    s.end(Buffer.alloc(3000, i));
    streams.push(s);
  }
  await Promise.all(streams.map(finished));
  t.ok(toAgent.length >= 2, `split into ${toAgent.length} messages`);
  for (const m of toAgent) t.ok(m.bytes <= HEADER_SIZE + 64 * 1024, `message of ${m.bytes} bytes fits`);
  const fins = toAgent.flatMap((m) => m.frames).filter((f) => (f.flags & Flag.FIN) !== 0);
  t.equal(fins.length, 40, "every stream's end went out, on its data");
  link.client.close();
});
