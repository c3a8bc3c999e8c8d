// Pipes a message body and holds it to the length its head declared. Over a
// structured head (HEAD.md) the body's end is the stream's end, while the
// HTTP/1.1 connection on the far side is framed by Content-Length: bytes past
// it would be read there as the start of the next message, and a body cut
// short would leave that connection waiting. Node's strictContentLength would
// catch both but throws from end(), which a pipe calls where nobody catches.
import { IncomingMessage } from "node:http";
import type { Readable, Writable } from "node:stream";

/** What went wrong with a body, for the caller to turn into a reset or a Status. */
export type BodyMismatch = "longer" | "shorter";

/**
 * Pipes `src` into `dest` with backpressure. With `length` set, more bytes or
 * an earlier end destroys `dest` and reports the mismatch instead of ending
 * it (what becomes of `src` is the caller's to say); without it `src`'s end
 * ends `dest`.
 */
export function pipeBody(
  src: Readable,
  dest: Writable,
  length: number | undefined,
  onMismatch: (why: BodyMismatch) => void,
): void {
  let seen = 0;
  /** Ended at its declared length: still listening, so that bytes past it are reported. */
  let whole = false;
  const fail = (why: BodyMismatch) => {
    src.off("data", onData);
    src.off("end", onEnd);
    dest.destroy();
    onMismatch(why);
  };
  const onData = (chunk: Buffer) => {
    seen += chunk.length;
    if (length !== undefined && seen > length) {
      fail("longer");
      return;
    }
    // The chunk that completes a declared length ends the body with it: one write to the caller,
    // not a write and then an empty one for end(). More bytes after it still fail, above.
    if (seen === length) {
      whole = true;
      dest.end(chunk);
      return;
    }
    if (!dest.write(chunk)) {
      src.pause();
      dest.once("drain", () => src.resume());
    }
  };
  const onEnd = () => {
    if (length !== undefined && seen < length) fail("shorter");
    else if (!dest.writableEnded) dest.end();
  };
  // 'end' may have gone by already: a stream that ended with its head emits it while the head's reader returns.
  if (src.readableEnded) {
    onEnd();
    return;
  }
  src.on("data", onData);
  src.once("end", onEnd);
  dest.once("close", () => {
    if (!whole) src.off("data", onData);
  });
  // A paused stream (a head was read off it) stays paused for a new 'data' listener.
  src.resume();
}

/** A Content-Length value as one decimal number; undefined when there is none or it is not one. */
export function declaredLength(value: string | string[] | undefined): number | undefined {
  if (typeof value !== "string" || !/^\d{1,15}$/.test(value)) return undefined;
  return Number(value);
}

/**
 * Whether all of an HTTP/1.1 message body has arrived and was read: the
 * parser sets `complete` only once the message ended whole (never for an
 * aborted one). HTTP/2's compat request says `complete` for an aborted or
 * destroyed stream too, so it never counts here.
 */
export function arrivedWhole(body: Readable): boolean {
  return body instanceof IncomingMessage && body.complete && !body.destroyed && body.readableLength === 0;
}
