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
 * session's transportHighWaterMark bounds what waits. On a TLS socket, while
 * messages wait, each write ends on a 16 KiB record boundary and the bytes
 * past it go in front of the next message (record-carry.ts): a full message
 * otherwise costs a fifth, tiny record.
 *
 * This reaches into ws: the Sender export (missing from its type definitions)
 * and a WebSocket's `_socket`, `_sender` and `_isServer`. It is used only when
 * they look as expected; otherwise messages go through ws.send. Frames never
 * interleave with ws's own (pongs, the close frame): ws's sender writes at
 * once unless it is compressing, which WEBSOCKET_OPTIONS turns off, and a
 * message finding it busy goes through it after the queue has drained. While
 * a tail is held back, a frame is half written, so ws's sender is marked busy
 * (its `_state`): it queues its frames, and they go out right after the
 * message that finishes the frame, which then holds nothing back. Tails are
 * held only when ws's sender has `_queue` and `dequeue` as expected.
 * websocket.test.ts (record-carry.test.ts for held tails) fails if the
 * installed ws no longer allows it.
 */

import type { Duplex } from "node:stream";
import type { TLSSocket } from "node:tls";
import type { WebSocket } from "ws";
import * as wsModule from "ws";
import { isPooled } from "./frame-pool.js";
import { type CarryWrite, type Done, RecordCarry } from "./record-carry.js";

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

/** The parts of ws's Sender this writer touches. */
interface WsSender {
  _state: number;
  _queue?: unknown[];
  dequeue?: () => void;
}

const BINARY = 0x02;
const SENDER_IDLE = 0; // ws's Sender state DEFAULT: nothing queued
/** Our mark in ws's Sender `_state` while a tail is held: any value but DEFAULT makes it queue. */
const SENDER_HELD = 0x7e;
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
  return new SocketSender(ws, socket, sender as WsSender, !internals._isServer, sender);
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
  /** Record alignment, on a TLS socket whose ws sender can be held off; undefined otherwise. */
  private readonly carry: RecordCarry | undefined;

  constructor(
    private readonly ws: WebSocket,
    private readonly socket: Duplex,
    private readonly sender: WsSender,
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
    const holdable = Array.isArray(sender._queue) && typeof sender.dequeue === "function";
    this.carry =
      (socket as Partial<TLSSocket>).encrypted === true && holdable ? new RecordCarry() : undefined;
  }

  /** True while the end of a written message is held back for the next one (for tests). */
  get holding(): boolean {
    return this.carry?.holding === true;
  }

  /** Queues one binary message; `done` runs once the socket has taken it, or failed. */
  send(message: Buffer, done: Done): void {
    this.queue.push({ message, done });
    this.next();
  }

  /** Runs `then` once every queued message has been written. */
  flushed(then: () => void): void {
    if (!this.writing && this.queue.length === 0 && !this.holding) then();
    else if (this.whenFlushed === undefined) this.whenFlushed = [then];
    else this.whenFlushed.push(then);
  }

  private next(): void {
    while (!this.writing) {
      const item = this.queue.shift();
      if (item === undefined) {
        // Never reached with a tail held (one is held only with a message behind it), but never lose one.
        const rest = this.carry?.flush();
        if (rest !== undefined) {
          this.writeOut(rest);
          this.release();
          continue;
        }
        const waiting = this.whenFlushed;
        this.whenFlushed = undefined;
        if (waiting !== undefined) for (const then of waiting) then();
        return;
      }
      const held = this.holding;
      if (!held && this.sender._state !== SENDER_IDLE) {
        this.ws.send(item.message, { binary: true }, item.done);
        continue;
      }
      const { bytes, room } = this.framed(item.message);
      if (this.carry === undefined) {
        this.writeOut({ bytes, dones: [item.done] });
        continue;
      }
      // Hold a tail only when a message follows to carry it and ws has none of its own frames waiting.
      const more = this.queue.length > 0 && this.sender._queue!.length === 0;
      const write = this.carry.take(bytes, room, item.done, more);
      if (this.carry.holding) {
        this.sender._state = SENDER_HELD;
        if (write !== undefined) this.writeOut(write);
        continue;
      }
      this.writeOut(write!);
      if (held) this.release();
    }
  }

  /** The frame ws's own frames waited for is whole now: they go next, behind the write just made. */
  private release(): void {
    if (this.sender._state !== SENDER_HELD) return;
    this.sender._state = SENDER_IDLE;
    this.sender.dequeue!();
  }

  private writeOut(write: CarryWrite): void {
    this.writing = true;
    this.socket.write(write.bytes, (err) => {
      this.writing = false;
      for (const done of write.dones) done(err);
      this.next();
    });
  }

  /**
   * The message as one WebSocket frame in one buffer, and how many bytes in
   * front of it in its memory are free (the pool's headroom).
   */
  private framed(message: Buffer): { bytes: Buffer; room: number } {
    const frameIt = frame!;
    if (isPooled(message)) {
      const [header, payload] = frameIt(message, this.inPlace) as [Buffer, Buffer?];
      const start = message.byteOffset - header.length;
      if (payload === message && start >= 0) {
        const whole = Buffer.from(message.buffer, start, header.length + message.length);
        whole.set(header, 0);
        return { bytes: whole, room: start };
      }
      return { bytes: payload === undefined ? header : Buffer.concat([header, payload]), room: 0 };
    }
    const parts = frameIt(message, this.copied);
    return { bytes: parts.length === 1 ? parts[0]! : Buffer.concat(parts), room: 0 };
  }
}
