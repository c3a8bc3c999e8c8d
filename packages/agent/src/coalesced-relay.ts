// Relays the apiserver's response body into a tunnel stream in writes as large
// as one turn of the event loop brought, not one per TLS record. Node hands a
// TLS socket's cleartext to JavaScript 16 KiB at a time, one callback each,
// and the session frames what a stream has queued on process.nextTick, which
// runs between those callbacks: piped as it came, a large LIST crossed the
// tunnel as 16 KiB frames, four WebSocket messages, masks and TLS writes per
// 64 KiB where one would do. Here the pieces of one turn wait for
// setImmediate (right after the turn's I/O callbacks) and are written
// together, so the session gathers them into one frame; a watch event alone
// in its turn still leaves in that same turn.
import type { Readable, Writable } from "node:stream";

/**
 * Pipes `src` into `dest` with backpressure, a turn's chunks written at
 * once, and ends `dest` at `src`'s end. Errors of either side are the
 * caller's to handle (as with Readable.pipe); a destroyed `dest` stops the
 * relay and drops what waited.
 */
export function relayCoalesced(src: Readable, dest: Writable): void {
  let pending: Buffer[] = [];
  let scheduled = false;
  let ended = false;
  const flush = () => {
    scheduled = false;
    const chunks = pending;
    pending = [];
    if (dest.destroyed) return;
    let room = true;
    for (const chunk of chunks) room = dest.write(chunk);
    if (ended) dest.end();
    else if (!room) {
      src.pause();
      dest.once("drain", () => src.resume());
    }
  };
  const later = () => {
    if (scheduled) return;
    scheduled = true;
    setImmediate(flush);
  };
  src.on("data", (chunk: Buffer) => {
    pending.push(chunk);
    later();
  });
  src.once("end", () => {
    ended = true;
    later();
  });
  dest.once("close", () => {
    pending = [];
    src.pause();
  });
}
