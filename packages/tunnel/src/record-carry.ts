/**
 * Keeps a TLS socket's writes on 16 KiB record boundaries while messages are
 * queued. A TLS socket seals each write into records of at most 16 KiB, the
 * last one holding whatever is left. A full tunnel message (a 64 KiB payload,
 * the 12-byte frame header and a 2-14-byte WebSocket header) is 4 full records
 * and a fifth of a few dozen bytes: one more record to seal on the sending
 * end, and one more tiny socket read per message on the receiving end.
 *
 * So while another message waits behind it, the part of a write past its last
 * record boundary (the tail, at most CARRY_MAX bytes; a larger tail is written
 * as it is) is held back and goes out in front of the next message. The pool
 * leaves room before each frame (frame-pool.ts HEADROOM), so the tail is
 * copied there and the payload is never joined again: at most CARRY_MAX bytes
 * are copied per message. With nothing queued behind it a tail is never held:
 * the last bytes of a burst go out at once.
 *
 * A message's `done` runs once the write carrying its last byte has been
 * taken by the socket: its buffer (the pool's) stays untouched until then.
 * This module only decides what to write; the writer (ws-send.ts) keeps other
 * writers off the socket while a tail is held, since their bytes would land
 * inside a frame.
 */

export type Done = (err?: Error | null) => void;

/** The largest plaintext a TLS record carries (RFC 8446 5.1, RFC 5246 6.2.1). */
export const TLS_RECORD = 16 * 1024;
/**
 * The largest tail held back. A full message leaves 16-26 bytes past its
 * fourth record, so the carry grows by that much per message and is written
 * out whole (one short record) about once in 80 messages.
 */
export const CARRY_MAX = 2048;

/** One write: the bytes, and the `done`s of the messages whose last byte they hold. */
export interface CarryWrite {
  bytes: Buffer;
  dones: Done[];
}

export class RecordCarry {
  /** The held tail: a view of the last message's buffer (or of a join), not yet written. */
  private tail: Buffer | undefined;
  /** The messages whose last bytes are in the tail, in order. */
  private waiting: Done[] = [];

  /** True while a tail is held back (another message is queued to carry it). */
  get holding(): boolean {
    return this.tail !== undefined;
  }

  /**
   * What to write for `message` (one whole WebSocket frame): the held tail
   * and the message, ending on a record boundary when `more` says another
   * message follows at once, or undefined when all of it is held. `room` is
   * how many bytes in front of `message` in its memory are free to overwrite
   * (0 for a buffer not ours).
   */
  take(message: Buffer, room: number, done: Done, more: boolean): CarryWrite | undefined {
    const bytes = this.prepend(message, room);
    this.tail = undefined;
    const dones = this.waiting;
    this.waiting = [];
    const held = more ? bytes.length % TLS_RECORD : 0;
    if (held === 0 || held > CARRY_MAX) {
      dones.push(done);
      return { bytes, dones };
    }
    this.tail = bytes.subarray(bytes.length - held);
    this.waiting.push(done);
    if (held === bytes.length) {
      // All of it is held (a short message): whatever was carried before rides along.
      this.waiting = dones.concat(this.waiting);
      return undefined;
    }
    return { bytes: bytes.subarray(0, bytes.length - held), dones };
  }

  /** The held tail as a write of its own (nothing follows it now), or undefined. */
  flush(): CarryWrite | undefined {
    const bytes = this.tail;
    if (bytes === undefined) return undefined;
    const dones = this.waiting;
    this.tail = undefined;
    this.waiting = [];
    return { bytes, dones };
  }

  /** The held tail and `message` as one buffer: in the room in front of it when there is enough. */
  private prepend(message: Buffer, room: number): Buffer {
    const tail = this.tail;
    if (tail === undefined) return message;
    if (tail.length > room) return Buffer.concat([tail, message], tail.length + message.length);
    const joined = Buffer.from(
      message.buffer,
      message.byteOffset - tail.length,
      tail.length + message.length,
    );
    joined.set(tail, 0);
    return joined;
  }
}
