/**
 * ws hands out each message as one buffer, which it builds by copying the
 * message out of the socket's reads (a TLS socket reads 16 KiB at a time):
 * on the receiving end of a bulk transfer, that copy, its allocation and the
 * garbage it leaves cost more than anything else the tunnel adds to TLS.
 * Here the session takes plain binary frames straight from the socket: the
 * payload is unmasked in place, in the socket's own buffers (as ws does), and
 * handed to Session.receive as the list of views it arrived in.
 *
 * Everything else stays ws's. Ping and pong frames go to ws's receiver whole
 * (it answers pings). At the first frame that is not an unfragmented binary
 * frame within maxPayload, masked as RFC 6455 wants for this end — a close, a
 * text or fragmented message, a reserved bit or opcode, a wrong mask bit, an
 * oversized length — the socket goes back to ws for good, from that frame's
 * first byte, so ws handles it (close handshake, error close codes) exactly
 * as if it had read every byte itself.
 *
 * This reaches into ws: a WebSocket's `_socket` and `_receiver`, the
 * receiver's parse state, and ws's own 'data' listener on the socket. The
 * socket is taken only when they look as expected and the receiver sits at a
 * frame boundary with nothing buffered; otherwise ws reads everything, as
 * before. websocket.test.ts fails if the installed ws no longer allows it.
 */

import { createRequire } from "node:module";
import type { Duplex, Writable } from "node:stream";
import type { WebSocket } from "ws";

interface ReceiverInternals extends Writable {
  _state?: unknown;
  _bufferedBytes?: unknown;
  _fragmented?: unknown;
  _opcode?: unknown;
  _maxPayload?: unknown;
  _isServer?: unknown;
}

const BINARY = 0x2;
const PING = 0x9;
const PONG = 0xa;
const MAX_CONTROL_PAYLOAD = 125;
const RECEIVER_GET_INFO = 0; // ws's Receiver state between frames
const MAX_HEADER = 14;

/** ws's native unmask when it would use it (bufferutil, unless WS_NO_BUFFER_UTIL), else none. */
const nativeUnmask = ((): ((buffer: Buffer, mask: Buffer) => void) | undefined => {
  if (process.env.WS_NO_BUFFER_UTIL) return undefined;
  try {
    const unmask = (createRequire(import.meta.url)("bufferutil") as { unmask?: unknown }).unmask;
    return typeof unmask === "function" ? (unmask as (buffer: Buffer, mask: Buffer) => void) : undefined;
  } catch {
    return undefined;
  }
})();
const rotated = Buffer.alloc(4);

/** XORs `piece` with `mask`, the piece starting `phase` bytes into the mask's cycle. */
function unmaskAt(piece: Buffer, mask: Buffer, phase: number): void {
  if (nativeUnmask !== undefined && piece.length >= 32) {
    for (let i = 0; i < 4; i++) rotated[i] = mask[(phase + i) & 3]!;
    nativeUnmask(piece, rotated);
    return;
  }
  for (let i = 0; i < piece.length; i++) piece[i]! ^= mask[(phase + i) & 3]!;
}

/**
 * Takes `ws`'s socket reads and hands each binary message's parts to
 * `deliver`. False (nothing changed) when this ws does not allow it.
 */
export function divertDataFrames(ws: WebSocket, deliver: (parts: Buffer[]) => void): boolean {
  const internals = ws as unknown as { _socket?: Duplex; _receiver?: ReceiverInternals; _isServer?: unknown };
  const socket = internals._socket;
  const receiver = internals._receiver;
  const isServer = internals._isServer;
  const wsListeners = socket?.listeners("data").filter((f) => f.name === "socketOnData") ?? [];
  if (
    socket === undefined ||
    receiver === undefined ||
    typeof receiver.write !== "function" ||
    typeof isServer !== "boolean" ||
    receiver._isServer !== isServer ||
    typeof receiver._maxPayload !== "number" ||
    wsListeners.length !== 1 ||
    ws.extensions !== "" ||
    !atFrameBoundary(receiver)
  ) {
    return false;
  }
  const wsOnData = wsListeners[0] as (chunk: Buffer) => void;
  const maxPayload = receiver._maxPayload === 0 ? Number.MAX_SAFE_INTEGER : receiver._maxPayload;
  const masked = isServer; // clients mask what they send, servers do not

  // Header bytes gathered across reads (only when a header straddles two).
  const header = Buffer.alloc(MAX_HEADER);
  let headerLength = 0;
  // The frame being read: its payload still to come, where its mask is.
  let payloadLeft = 0;
  let control = false;
  let phase = 0;
  const mask = Buffer.alloc(4);
  let parts: Buffer[] = [];

  /** Socket reads go to ws again, starting with `rest` (the current frame from its first byte). */
  const handBack = (rest: Buffer[]) => {
    socket.removeListener("data", onData);
    socket.on("data", wsOnData);
    for (const chunk of rest) if (chunk.length > 0) wsOnData.call(socket, chunk);
  };

  /**
   * The frame read so far is complete: a message goes to the session, a ping
   * or pong (header and payload as read, still masked) to ws's receiver.
   * False if the socket went back to ws (from `rest` on).
   */
  const frameDone = (rest: Buffer): boolean => {
    const frame = parts;
    parts = [];
    if (!control) {
      deliver(frame);
      return true;
    }
    receiver.write(frame.length === 1 ? frame[0]! : Buffer.concat(frame));
    if (atFrameBoundary(receiver)) return true;
    handBack([rest]);
    return false;
  };

  const onData = (chunk: Buffer): void => {
    let pos = 0;
    while (pos < chunk.length) {
      if (payloadLeft > 0) {
        const n = Math.min(payloadLeft, chunk.length - pos);
        const piece = chunk.subarray(pos, pos + n);
        pos += n;
        payloadLeft -= n;
        if (!control) {
          if (masked) unmaskAt(piece, mask, phase);
          phase = (phase + n) & 3;
        }
        parts.push(piece);
        if (payloadLeft > 0) return;
        if (!frameDone(chunk.subarray(pos))) return;
        continue;
      }
      // A header: its second byte says how long it is.
      const start = pos;
      let source = chunk;
      let at = pos;
      let size = 0;
      let gathered: Buffer | undefined;
      if (
        headerLength === 0 &&
        chunk.length - pos >= 2 &&
        chunk.length - pos >= headerSize(chunk[pos + 1]!)
      ) {
        size = headerSize(chunk[pos + 1]!);
        pos += size;
      } else {
        // It straddles two reads: gather it in `header`.
        while (pos < chunk.length && (headerLength < 2 || headerLength < headerSize(header[1]!))) {
          header[headerLength++] = chunk[pos++]!;
        }
        if (headerLength < 2 || headerLength < headerSize(header[1]!)) return;
        size = headerLength;
        headerLength = 0;
        gathered = Buffer.from(header.subarray(0, size));
        source = gathered;
        at = 0;
      }
      const b0 = source[at]!;
      const b1 = source[at + 1]!;
      const opcode = b0 & 0x0f;
      const fin = (b0 & 0x80) !== 0;
      const reserved = (b0 & 0x70) !== 0;
      const maskBit = (b1 & 0x80) !== 0;
      let length = b1 & 0x7f;
      if (length === 126) length = source.readUInt16BE(at + 2);
      else if (length === 127) {
        const high = source.readUInt32BE(at + 2);
        length = high > 0x1fffff ? Number.MAX_SAFE_INTEGER : high * 2 ** 32 + source.readUInt32BE(at + 6);
      }
      const isControl = opcode === PING || opcode === PONG;
      if (
        !fin ||
        reserved ||
        maskBit !== masked ||
        (opcode !== BINARY && !isControl) ||
        (isControl && length > MAX_CONTROL_PAYLOAD) ||
        length > maxPayload
      ) {
        handBack(gathered === undefined ? [chunk.subarray(start)] : [gathered, chunk.subarray(pos)]);
        return;
      }
      if (maskBit) source.copy(mask, 0, at + size - 4, at + size);
      control = isControl;
      phase = 0;
      payloadLeft = length;
      if (control) {
        parts.push(Buffer.from(source.subarray(at, at + size)));
      }
      if (length === 0 && !frameDone(chunk.subarray(pos))) return;
    }
  };

  socket.removeListener("data", wsOnData);
  socket.on("data", onData);
  return true;
}

/** ws's receiver is between frames with nothing buffered, so it can be handed whole frames. */
function atFrameBoundary(receiver: ReceiverInternals): boolean {
  return (
    receiver._state === RECEIVER_GET_INFO &&
    receiver._bufferedBytes === 0 &&
    receiver._fragmented === 0 &&
    receiver._opcode !== 0x08
  );
}

/** The size of a WebSocket frame header, from its second byte. */
function headerSize(b1: number): number {
  const length = b1 & 0x7f;
  return 2 + (length === 126 ? 2 : length === 127 ? 8 : 0) + ((b1 & 0x80) !== 0 ? 4 : 0);
}
