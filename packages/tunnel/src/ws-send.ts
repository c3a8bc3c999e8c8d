/**
 * Writes the session's messages to ws's socket as WebSocket frames, one
 * buffer per message and one message at a time. Two costs of ws.send go:
 *
 * - A client must mask every byte it sends (RFC 6455). ws does it by copying
 *   each message into a fresh buffer, since it may not modify the caller's.
 *   Messages from the frame pool are ours to rewrite until sent, so those are
 *   masked in place, by ws's own framing code (Sender.frame: a fresh random
 *   key per message, or the WebSocket's generateMask), and the header ws makes
 *   goes into the pool buffer's headroom in front of the frame.
 * - ws writes header and payload as two buffers, and a socket's Writable
 *   turns writes queued behind each other into one multi-buffer write. Node's
 *   TLS socket joins the buffers of such a write into a fresh copy before it
 *   encrypts them: on the sending end of a bulk transfer that copy cost more
 *   than the encryption. So each message is one buffer (the pool's headroom,
 *   or a small join for control messages) and the next is written only once
 *   the last has left, as a plain TLS connection writing 64 KiB at a time does.
 *
 * Messages wait here in order until then; close() lets them go first. The
 * session's transportHighWaterMark bounds what waits.
 *
 * This reaches into ws: the Sender export (missing from its type definitions)
 * and a WebSocket's `_socket`, `_sender` and `_isServer`. It is used only when
 * they look as expected; otherwise messages go through ws.send. Frames never
 * interleave with ws's own (pongs, the close frame): ws's sender writes at
 * once unless it is compressing, which WEBSOCKET_OPTIONS turns off, and a
 * message finding it busy goes through it after the queue has drained.
 * websocket.test.ts fails if the installed ws no longer allows it.
 */

import type { Duplex } from "node:stream";
import type { WebSocket } from "ws";
import * as wsModule from "ws";
import { isPooled } from "./frame-pool.js";

interface FrameOptions {
  fin: boolean;
  mask: boolean;
  opcode: number;
  readOnly: boolean;
  rsv1: boolean;
  generateMask?: unknown;
  maskBuffer?: unknown;
}

type Frame = (data: Buffer, options: FrameOptions) => Buffer[];
type Done = (err?: Error | null) => void;

const BINARY = 0x02;
const SENDER_IDLE = 0; // ws's Sender state DEFAULT: nothing queued
const frame = (wsModule as unknown as { Sender?: { frame?: Frame } }).Sender?.frame;

/** ws's framing options for the four cases that need no per-socket state. */
const SHARED: Record<string, FrameOptions> = {};
for (const mask of [false, true]) {
  for (const readOnly of [false, true]) {
    SHARED[`${mask}${readOnly}`] = { fin: true, mask, opcode: BINARY, readOnly, rsv1: false };
  }
}

/** The socket sender for a WebSocket, or undefined when this ws cannot take it. */
export function socketSender(ws: WebSocket): SocketSender | undefined {
  const internals = ws as unknown as {
    _isServer?: unknown;
    _socket?: Duplex;
    _sender?: { _state?: unknown; _generateMask?: unknown; _maskBuffer?: unknown };
  };
  const socket = internals._socket;
  const sender = internals._sender;
  if (
    typeof frame !== "function" ||
    typeof internals._isServer !== "boolean" ||
    typeof socket?.write !== "function" ||
    typeof sender?._state !== "number"
  ) {
    return undefined;
  }
  return new SocketSender(ws, socket, sender as { _state: number }, !internals._isServer, sender);
}

/**
 * Queues a WebSocket's messages and writes them to its socket (a class, not
 * closures: every session keeps one).
 */
class SocketSender {
  private readonly queue: Array<{ message: Buffer; done: Done }> = [];
  private writing = false;
  private whenFlushed: Array<() => void> | undefined;
  private readonly inPlace: FrameOptions;
  private readonly copied: FrameOptions;

  constructor(
    private readonly ws: WebSocket,
    private readonly socket: Duplex,
    private readonly sender: { _state: number },
    mask: boolean,
    custom: { _generateMask?: unknown; _maskBuffer?: unknown },
  ) {
    if (custom._generateMask === undefined) {
      this.inPlace = SHARED[`${mask}false`]!;
      this.copied = SHARED[`${mask}true`]!;
    } else {
      const own = { generateMask: custom._generateMask, maskBuffer: custom._maskBuffer };
      this.inPlace = { ...SHARED[`${mask}false`]!, ...own };
      this.copied = { ...SHARED[`${mask}true`]!, ...own };
    }
  }

  /** Queues one binary message; `done` runs once the socket has taken it, or failed. */
  send(message: Buffer, done: Done): void {
    this.queue.push({ message, done });
    this.next();
  }

  /** Runs `then` once every queued message has been written. */
  flushed(then: () => void): void {
    if (!this.writing && this.queue.length === 0) then();
    else if (this.whenFlushed === undefined) this.whenFlushed = [then];
    else this.whenFlushed.push(then);
  }

  private next(): void {
    while (!this.writing) {
      const item = this.queue.shift();
      if (item === undefined) {
        const waiting = this.whenFlushed;
        this.whenFlushed = undefined;
        if (waiting !== undefined) for (const then of waiting) then();
        return;
      }
      if (this.sender._state !== SENDER_IDLE) {
        this.ws.send(item.message, { binary: true }, item.done);
        continue;
      }
      this.writing = true;
      this.socket.write(this.framed(item.message), (err) => {
        this.writing = false;
        item.done(err);
        this.next();
      });
    }
  }

  /** The message as one WebSocket frame in one buffer. */
  private framed(message: Buffer): Buffer {
    const frameIt = frame!;
    if (isPooled(message)) {
      const [header, payload] = frameIt(message, this.inPlace) as [Buffer, Buffer?];
      const start = message.byteOffset - header.length;
      if (payload === message && start >= 0) {
        const whole = Buffer.from(message.buffer, start, header.length + message.length);
        whole.set(header, 0);
        return whole;
      }
      return payload === undefined ? header : Buffer.concat([header, payload]);
    }
    const parts = frameIt(message, this.copied);
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }
}
