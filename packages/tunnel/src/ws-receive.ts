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
  const diverter = new FrameDiverter(
    socket,
    receiver,
    wsListeners[0] as (chunk: Buffer) => void,
    deliver,
    isServer,
    receiver._maxPayload === 0 ? Number.MAX_SAFE_INTEGER : receiver._maxPayload,
  );
  socket.removeListener("data", diverter.wsOnData);
  socket.on("data", diverter.onData);
  return true;
}

/** The parse state of one socket (a class, not closures: every session keeps one). */
class FrameDiverter {
  /** Header bytes gathered across reads (only when a header straddles two), then the frame's mask. */
  private readonly state = Buffer.allocUnsafe(MAX_HEADER + 4);
  private readonly header = this.state.subarray(0, MAX_HEADER);
  private readonly mask = this.state.subarray(MAX_HEADER);
  private headerLength = 0;
  /** The frame being read: its payload still to come, whether it is a ping or pong, the mask's phase. */
  private payloadLeft = 0;
  private control = false;
  private phase = 0;
  private parts: Buffer[] = [];

  constructor(
    private readonly socket: Duplex,
    private readonly receiver: ReceiverInternals,
    readonly wsOnData: (chunk: Buffer) => void,
    private readonly deliver: (parts: Buffer[]) => void,
    /** Clients mask what they send, servers do not: a server end expects masked frames. */
    private readonly masked: boolean,
    private readonly maxPayload: number,
  ) {}

  readonly onData = (chunk: Buffer): void => {
    let pos = 0;
    while (pos < chunk.length) {
      if (this.payloadLeft > 0) {
        const n = Math.min(this.payloadLeft, chunk.length - pos);
        const piece = chunk.subarray(pos, pos + n);
        pos += n;
        this.payloadLeft -= n;
        if (!this.control) {
          if (this.masked) unmaskAt(piece, this.mask, this.phase);
          this.phase = (this.phase + n) & 3;
        }
        this.parts.push(piece);
        if (this.payloadLeft > 0) return;
        if (!this.frameDone(chunk, pos)) return;
        continue;
      }
      // A header: its second byte says how long it is.
      const start = pos;
      let source = chunk;
      let at = pos;
      let size = 0;
      let gathered: Buffer | undefined;
      const header = this.header;
      if (
        this.headerLength === 0 &&
        chunk.length - pos >= 2 &&
        chunk.length - pos >= headerSize(chunk[pos + 1]!)
      ) {
        size = headerSize(chunk[pos + 1]!);
        pos += size;
      } else {
        // It straddles two reads: gather it in `header`.
        while (pos < chunk.length && (this.headerLength < 2 || this.headerLength < headerSize(header[1]!))) {
          header[this.headerLength++] = chunk[pos++]!;
        }
        if (this.headerLength < 2 || this.headerLength < headerSize(header[1]!)) return;
        size = this.headerLength;
        this.headerLength = 0;
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
        maskBit !== this.masked ||
        (opcode !== BINARY && !isControl) ||
        (isControl && length > MAX_CONTROL_PAYLOAD) ||
        length > this.maxPayload
      ) {
        this.handBack(gathered === undefined ? [chunk.subarray(start)] : [gathered, chunk.subarray(pos)]);
        return;
      }
      if (maskBit) source.copy(this.mask, 0, at + size - 4, at + size);
      this.control = isControl;
      this.phase = 0;
      this.payloadLeft = length;
      if (isControl) this.parts.push(Buffer.from(source.subarray(at, at + size)));
      if (length === 0 && !this.frameDone(chunk, pos)) return;
    }
  };

  /** Socket reads go to ws again, starting with `rest` (the current frame from its first byte). */
  private handBack(rest: Buffer[]): void {
    this.socket.removeListener("data", this.onData);
    this.socket.on("data", this.wsOnData);
    for (const chunk of rest) if (chunk.length > 0) this.wsOnData.call(this.socket, chunk);
  }

  /**
   * The frame read so far is complete: a message goes to the session, a ping
   * or pong (header and payload as read, still masked) to ws's receiver.
   * False if the socket went back to ws (from byte `pos` of `chunk` on). The
   * rest of the read is cut out only then: a view per frame is garbage a bulk
   * transfer makes for nothing.
   */
  private frameDone(chunk: Buffer, pos: number): boolean {
    const frame = this.parts;
    this.parts = [];
    if (!this.control) {
      this.deliver(frame);
      return true;
    }
    this.receiver.write(frame.length === 1 ? frame[0]! : Buffer.concat(frame));
    if (atFrameBoundary(this.receiver)) return true;
    this.handBack([chunk.subarray(pos)]);
    return false;
  }
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
