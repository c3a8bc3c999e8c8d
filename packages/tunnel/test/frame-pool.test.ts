import t from "tap";
import { encodeData, Flag, MAX_MESSAGE_SIZE } from "../src/frame.js";
import { isPooled, pooledDataFrame, releaseFrame } from "../src/frame-pool.js";
import { Session, type Transport } from "../src/index.js";

t.test("a pooled frame has the same bytes as a freshly encoded one", async (t) => {
  const payload = Buffer.from("hello, tunnel");
  const frame = pooledDataFrame(Flag.FIN, 7, payload);
  t.same(frame, encodeData(Flag.FIN, 7, payload));
  t.ok(isPooled(frame));
  releaseFrame(frame);
});

t.test("released memory is reused; buffers the pool did not make are not", async (t) => {
  const first = pooledDataFrame(0, 1, Buffer.alloc(10));
  const memory = first.buffer;
  releaseFrame(first);
  const second = pooledDataFrame(0, 1, Buffer.alloc(20));
  t.equal(second.buffer, memory, "the next frame lives in the released memory");
  const foreign = Buffer.alloc(MAX_MESSAGE_SIZE);
  t.notOk(isPooled(foreign));
  releaseFrame(foreign);
  const third = pooledDataFrame(0, 1, Buffer.alloc(30));
  t.not(third.buffer, foreign.buffer, "a foreign buffer never enters the pool");
  releaseFrame(second);
  releaseFrame(third);
});

t.test("a message the transport still holds is never overwritten", async (t) => {
  // A transport that finishes sends only when told: until then, what it holds must not change.
  const held: Array<{ message: Buffer; copy: Buffer; done: () => void }> = [];
  const transport: Transport = {
    send: (message, done) => held.push({ message, copy: Buffer.from(message), done }),
    close: () => {},
  };
  const chunk = 32 * 1024;
  const session = new Session(transport, {
    role: "client",
    keepAliveInterval: 0,
    deadPeerTimeout: 0,
    transportHighWaterMark: 2 * chunk, // two data frames in flight at most
    maxFrameSize: chunk, // one frame per write (queued writes would otherwise share 64 KiB frames)
  });
  const stream = session.open("svc");
  stream.on("error", () => {});
  // Distinct bytes per chunk (well inside the initial window), so reused memory would show.
  for (let i = 1; i <= 6; i++) stream.write(Buffer.alloc(chunk, i));
  const tick = () => new Promise((r) => setImmediate(r));
  await tick();
  const finished: Buffer[] = [];
  for (let round = 0; round < 4 && held.length > 0; round++) {
    const h = held.shift()!;
    finished.push(h.message);
    h.done();
    await tick();
    for (const other of held) t.ok(other.message.equals(other.copy), "held messages unchanged");
  }
  t.ok(
    held.some((h) => finished.some((f) => f.buffer === h.message.buffer)),
    "a finished message's memory carries a later frame",
  );
  session.close();
});
