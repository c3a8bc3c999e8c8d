/**
 * The frame codec: a fixed 12-byte header, optionally followed by a payload
 * (Data frames only). Layout and rules are specified in PROTOCOL.md; this file
 * checks everything that can be checked without session state, so the session
 * only has to reason about streams.
 */

export const PROTOCOL_VERSION = 1;
export const HEADER_SIZE = 12;

/** Largest Data payload a peer may send; receivers reject anything larger. */
export const MAX_FRAME_PAYLOAD = 64 * 1024;
/** Largest WebSocket message: one or more whole frames, never more than this. */
export const MAX_MESSAGE_SIZE = HEADER_SIZE + MAX_FRAME_PAYLOAD;
/** Credit every stream starts with in each direction, before any WindowUpdate. */
export const INITIAL_WINDOW = 256 * 1024;
/** Credit a sender may hold for one stream; more is a protocol violation. */
export const MAX_WINDOW = 2 ** 31 - 1;

export const FrameType = {
  DATA: 0,
  WINDOW_UPDATE: 1,
  PING: 2,
  GO_AWAY: 3,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

export const Flag = {
  SYN: 0x1,
  ACK: 0x2,
  FIN: 0x4,
  RST: 0x8,
} as const;

const KNOWN_FLAGS = Flag.SYN | Flag.ACK | Flag.FIN | Flag.RST;

export interface Frame {
  type: FrameType;
  flags: number;
  streamId: number;
  /** Payload size for Data; the value (credit, code, opaque) for the others. */
  length: number;
  /** Data frames only; a view into the received message (no copy). */
  payload?: Buffer;
  /**
   * Instead of `payload` when the message arrived as a list of parts and the
   * payload spans several of them: views of each part's share, in order.
   */
  pieces?: readonly Buffer[];
}

/** A Data frame's payload in one buffer (copied only if it spans parts of the message). */
export function payloadBytes(frame: Frame): Buffer {
  return frame.payload ?? Buffer.concat(frame.pieces ?? []);
}

export function writeHeader(
  target: Buffer,
  offset: number,
  type: FrameType,
  flags: number,
  streamId: number,
  length: number,
): void {
  target[offset] = PROTOCOL_VERSION;
  target[offset + 1] = type;
  target.writeUInt16BE(flags, offset + 2);
  target.writeUInt32BE(streamId, offset + 4);
  target.writeUInt32BE(length, offset + 8);
}

/** A frame without payload (every type but Data, or an empty Data frame). */
export function encodeControl(type: FrameType, flags: number, streamId: number, value: number): Buffer {
  const buf = Buffer.allocUnsafe(HEADER_SIZE);
  writeHeader(buf, 0, type, flags, streamId, value);
  return buf;
}

/** A Data frame; the payload is copied behind the header so it is one message. */
export function encodeData(flags: number, streamId: number, payload: Uint8Array | undefined): Buffer {
  const size = payload === undefined ? 0 : payload.length;
  const buf = Buffer.allocUnsafe(HEADER_SIZE + size);
  writeHeader(buf, 0, FrameType.DATA, flags, streamId, size);
  if (payload !== undefined && size > 0) buf.set(payload, HEADER_SIZE);
  return buf;
}

export function encodeFrame(frame: Frame): Buffer {
  if (frame.type === FrameType.DATA) return encodeData(frame.flags, frame.streamId, frame.payload);
  return encodeControl(frame.type, frame.flags, frame.streamId, frame.length);
}

/**
 * Context-free validity of one header. Returns a reason when the header can
 * never be valid, whatever state the session is in.
 */
export function checkHeader(
  version: number,
  type: number,
  flags: number,
  streamId: number,
  length: number,
): string | undefined {
  if (version !== PROTOCOL_VERSION) return `unsupported protocol version ${version}`;
  if ((flags & ~KNOWN_FLAGS) !== 0) return `unknown flags 0x${flags.toString(16)}`;
  switch (type) {
    case FrameType.DATA:
      if (streamId === 0) return "data frame on stream 0";
      if ((flags & (Flag.ACK | Flag.RST)) !== 0) return "data frame with ACK or RST flag";
      if (length > MAX_FRAME_PAYLOAD) return `data frame of ${length} bytes exceeds ${MAX_FRAME_PAYLOAD}`;
      return undefined;
    case FrameType.WINDOW_UPDATE:
      if (streamId === 0) return "window update on stream 0";
      if (flags !== 0 && flags !== Flag.ACK && flags !== Flag.RST) return "window update with invalid flags";
      if (flags === Flag.RST && length === 0) return "reset without a code";
      return undefined;
    case FrameType.PING:
      if (streamId !== 0) return "ping on a stream";
      if (flags !== Flag.SYN && flags !== Flag.ACK) return "ping without exactly one of SYN or ACK";
      return undefined;
    case FrameType.GO_AWAY:
      if (flags !== 0) return "go-away with flags";
      return undefined;
    default:
      return `unknown frame type ${type}`;
  }
}

/**
 * Splits one WebSocket message into frames and hands each to `visit`, stopping
 * at the first malformed header or truncated payload. Returns the reason it
 * stopped, or undefined when the whole message was consumed. `visit` may
 * return false to stop early (the session closed).
 *
 * The message is one buffer or the list of parts it arrived in (the socket's
 * reads, see ws-receive.ts); frames and payloads may span parts.
 */
export function parseFrames(
  message: Buffer | readonly Buffer[],
  visit: (frame: Frame) => boolean,
): string | undefined {
  if (Array.isArray(message)) {
    return message.length === 1 ? parseFrames(message[0]!, visit) : parseParts(message, visit);
  }
  return parseBuffer(message as Buffer, visit);
}

function parseBuffer(message: Buffer, visit: (frame: Frame) => boolean): string | undefined {
  if (message.length === 0) return "empty message";
  if (message.length > MAX_MESSAGE_SIZE)
    return `message of ${message.length} bytes exceeds ${MAX_MESSAGE_SIZE}`;
  let offset = 0;
  while (offset < message.length) {
    if (message.length - offset < HEADER_SIZE) return "truncated frame header";
    const version = message[offset]!;
    const type = message[offset + 1]!;
    const flags = message.readUInt16BE(offset + 2);
    const streamId = message.readUInt32BE(offset + 4);
    const length = message.readUInt32BE(offset + 8);
    const problem = checkHeader(version, type, flags, streamId, length);
    if (problem !== undefined) return problem;
    offset += HEADER_SIZE;
    const frame: Frame = { type: type as FrameType, flags, streamId, length };
    if (type === FrameType.DATA) {
      if (message.length - offset < length) return "truncated data payload";
      frame.payload = message.subarray(offset, offset + length);
      offset += length;
    }
    if (!visit(frame)) return undefined;
  }
  return undefined;
}

/** A header that straddles two parts is gathered here (parsing is synchronous, so one will do). */
const straddling = Buffer.alloc(HEADER_SIZE);

/** A read position in a message that came as parts: byte `at` of parts[index]. */
interface Cursor {
  readonly parts: readonly Buffer[];
  index: number;
  at: number;
}

/** Views of the cursor's next `n` bytes, advancing it; the caller checked that they exist. */
function take(cursor: Cursor, n: number): Buffer[] {
  const views: Buffer[] = [];
  while (n > 0) {
    const part = cursor.parts[cursor.index]!;
    const k = Math.min(part.length - cursor.at, n);
    // A whole part is its own view: no new Buffer for the common case of a payload spanning reads.
    if (k === part.length) views.push(part);
    else if (k > 0) views.push(part.subarray(cursor.at, cursor.at + k));
    cursor.at += k;
    n -= k;
    if (cursor.at === part.length) {
      cursor.index++;
      cursor.at = 0;
    }
  }
  return views;
}

function parseParts(parts: readonly Buffer[], visit: (frame: Frame) => boolean): string | undefined {
  let left = 0;
  for (let i = 0; i < parts.length; i++) left += parts[i]!.length;
  if (left === 0) return "empty message";
  if (left > MAX_MESSAGE_SIZE) return `message of ${left} bytes exceeds ${MAX_MESSAGE_SIZE}`;
  const cursor: Cursor = { parts, index: 0, at: 0 };
  while (left > 0) {
    if (left < HEADER_SIZE) return "truncated frame header";
    while (cursor.at === parts[cursor.index]!.length) {
      cursor.index++;
      cursor.at = 0;
    }
    let header = parts[cursor.index]!;
    let offset = cursor.at;
    if (header.length - offset >= HEADER_SIZE) {
      cursor.at += HEADER_SIZE;
      if (cursor.at === header.length) {
        cursor.index++;
        cursor.at = 0;
      }
    } else {
      let filled = 0;
      for (const view of take(cursor, HEADER_SIZE)) {
        straddling.set(view, filled);
        filled += view.length;
      }
      header = straddling;
      offset = 0;
    }
    left -= HEADER_SIZE;
    const version = header[offset]!;
    const type = header[offset + 1]!;
    const flags = header.readUInt16BE(offset + 2);
    const streamId = header.readUInt32BE(offset + 4);
    const length = header.readUInt32BE(offset + 8);
    const problem = checkHeader(version, type, flags, streamId, length);
    if (problem !== undefined) return problem;
    const frame: Frame = { type: type as FrameType, flags, streamId, length };
    if (type === FrameType.DATA) {
      if (left < length) return "truncated data payload";
      left -= length;
      const views = take(cursor, length);
      if (views.length === 1) frame.payload = views[0]!;
      else if (views.length === 0) frame.payload = EMPTY;
      else frame.pieces = views;
    }
    if (!visit(frame)) return undefined;
  }
  return undefined;
}

const EMPTY = Buffer.alloc(0);
