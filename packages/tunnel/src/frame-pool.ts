/**
 * Reused buffers for outgoing Data frames. A bulk transfer otherwise allocates
 * a fresh 64 KiB buffer per frame, and that churn (with the WebSocket layer's
 * own copy per message) kept V8 collecting every few tens of milliseconds on
 * the sending side. A buffer goes back to the pool once the transport reports
 * the message sent (Transport.send's `done`), so a transport must not touch a
 * message after that; until then it may even rewrite it in place (the
 * WebSocket client masks it there).
 *
 * Each buffer keeps HEADROOM bytes free in front of the frame, room for the
 * largest WebSocket frame header, so the transport can put the header there
 * and write header and frame as one buffer: a TLS socket copies the parts of
 * a multi-part write into one buffer first, 64 KiB per message. In front of
 * the header there is room for the tail of the message before, which a TLS
 * writer holds back to end its writes on record boundaries (record-carry.ts).
 *
 * One pool serves every session in the process; it keeps at most POOL_LIMIT
 * idle buffers and allocates more while all are in flight.
 */

import { FrameType, HEADER_SIZE, MAX_MESSAGE_SIZE, writeHeader } from "./frame.js";
import { CARRY_MAX } from "./record-carry.js";

const POOL_LIMIT = 64; // 4 MiB idle at most
/** Messages from this size up go in pooled buffers (Buffer.allocUnsafe pools only below 4 KiB). */
export const POOLED_FRAME_MIN = 4096;
/**
 * Free bytes in front of a pooled frame: room for a carried tail and a masked
 * WebSocket header for 64 KiB and more (2 + 8 + 4), rounded up so the frame
 * stays 8-byte aligned.
 */
export const HEADROOM = CARRY_MAX + 16;
const idle: ArrayBuffer[] = [];
const ours = new WeakSet<ArrayBuffer>();

/** A Data frame carrying `payload`, in a pooled buffer; hand it to releaseFrame once sent. */
export function pooledDataFrame(flags: number, streamId: number, payload: Uint8Array): Buffer {
  const frame = pooledFrame(payload.length);
  writeHeader(frame, 0, FrameType.DATA, flags, streamId, payload.length);
  frame.set(payload, HEADER_SIZE);
  return frame;
}

/**
 * A pooled buffer for a Data frame of up to `capacity` payload bytes: write
 * the payload from HEADER_SIZE on, then the header (writeHeader), and send
 * `subarray(0, HEADER_SIZE + length)` of it, which stays pooled.
 */
export function pooledFrame(capacity: number): Buffer {
  let memory = idle.pop();
  if (memory === undefined) {
    memory = new ArrayBuffer(HEADROOM + MAX_MESSAGE_SIZE);
    ours.add(memory);
  }
  return Buffer.from(memory, HEADROOM, HEADER_SIZE + capacity);
}

/**
 * A pooled buffer of `size` bytes (at most MAX_MESSAGE_SIZE) for a message
 * joined from several small frames: pooled, the transport frames it in place
 * (headroom, masking) instead of copying it once more.
 */
export function pooledMessage(size: number): Buffer {
  return pooledFrame(size - HEADER_SIZE);
}

/** True if `message` lives in pool memory (so the sender may rewrite it until it is released). */
export function isPooled(message: Buffer): boolean {
  return ours.has(message.buffer as ArrayBuffer);
}

/** Returns a sent message's memory to the pool if it came from there; other buffers are ignored. */
export function releaseFrame(message: Buffer): void {
  if (isPooled(message) && idle.length < POOL_LIMIT) idle.push(message.buffer as ArrayBuffer);
}
