// pipeBody holds a body to its declared length: the chunk that completes it
// ends the destination with it (one write, no empty write for end()), more
// bytes or an early end destroy the destination instead of ending it.
import t from "tap";
import { PassThrough, Writable } from "node:stream";
import { type BodyMismatch, pipeBody } from "../src/body-pipe.js";

/** A destination that records each write and whether end() came with the last one. */
function recorder() {
  const writes: string[] = [];
  const dest = new Writable({
    write(chunk: Buffer, _enc, done) {
      writes.push(chunk.toString());
      done();
    },
  });
  const calls: string[] = [];
  const write = dest.write.bind(dest);
  const end = dest.end.bind(dest);
  dest.write = ((chunk: Buffer, ...rest: never[]) => {
    calls.push(`write ${chunk.length}`);
    return write(chunk, ...rest);
  }) as typeof dest.write;
  dest.end = ((chunk?: unknown, ...rest: never[]) => {
    calls.push(Buffer.isBuffer(chunk) ? `end ${chunk.length}` : "end");
    return end(chunk as Buffer, ...rest);
  }) as typeof dest.end;
  return { dest, writes, calls };
}

const flush = () => new Promise((r) => setImmediate(r));

t.test("the chunk completing a declared length ends the body with it", async (t) => {
  const src = new PassThrough();
  const { dest, writes, calls } = recorder();
  const mismatches: BodyMismatch[] = [];
  pipeBody(src, dest, 10, (why) => mismatches.push(why));
  src.write("hello");
  src.end("world");
  await flush();
  t.same(writes, ["hello", "world"]);
  t.same(calls, ["write 5", "end 5"], "no separate empty end");
  t.ok(dest.writableEnded);
  t.same(mismatches, []);
});

t.test("without a declared length the source's end ends the body", async (t) => {
  const src = new PassThrough();
  const { dest, calls } = recorder();
  pipeBody(src, dest, undefined, () => t.fail("no mismatch"));
  src.end("abc");
  await flush();
  t.same(calls, ["write 3", "end"]);
});

t.test("hostile: bytes past the declared length destroy the destination", async (t) => {
  const src = new PassThrough();
  const { dest, writes } = recorder();
  const mismatches: BodyMismatch[] = [];
  pipeBody(src, dest, 4, (why) => mismatches.push(why));
  src.write("abcd");
  await flush();
  src.end("GET /smuggled HTTP/1.1\r\n\r\n");
  await flush();
  t.same(mismatches, ["longer"]);
  t.ok(dest.destroyed, "destroyed");
  t.notOk(writes.join("").includes("smuggled"), "nothing past the length was written");
});

t.test("hostile: bytes past the length in the very chunk that reaches it destroy too", async (t) => {
  const src = new PassThrough();
  const { dest, writes } = recorder();
  const mismatches: BodyMismatch[] = [];
  pipeBody(src, dest, 4, (why) => mismatches.push(why));
  src.end("abcdEXTRA");
  await flush();
  t.same(mismatches, ["longer"]);
  t.ok(dest.destroyed);
  t.same(writes, [], "the overlong chunk went nowhere");
});

t.test("hostile: a body ending short of its length destroys the destination", async (t) => {
  const src = new PassThrough();
  const { dest } = recorder();
  const mismatches: BodyMismatch[] = [];
  pipeBody(src, dest, 10, (why) => mismatches.push(why));
  src.end("short");
  await flush();
  t.same(mismatches, ["shorter"]);
  t.ok(dest.destroyed);
  t.notOk(dest.writableEnded, "never ended as if whole");
});
