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

export interface SocketSender {
  /** Queues one binary message; `done` runs once the socket has taken it, or failed. */
  send(message: Buffer, done: Done): void;
  /** Runs `then` once every queued message has been written. */
  flushed(then: () => void): void;
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
  const mask = !internals._isServer;
  const custom =
    sender._generateMask === undefined
      ? {}
      : { generateMask: sender._generateMask, maskBuffer: sender._maskBuffer };
  const inPlace: FrameOptions = { fin: true, mask, opcode: BINARY, readOnly: false, rsv1: false, ...custom };
  const copied: FrameOptions = { ...inPlace, readOnly: true };
  const queue: Array<{ message: Buffer; done: Done }> = [];
  let writing = false;
  let whenFlushed: Array<() => void> = [];

  /** The message as one WebSocket frame in one buffer. */
  const framed = (message: Buffer): Buffer => {
    if (isPooled(message)) {
      const [header, payload] = frame(message, inPlace) as [Buffer, Buffer?];
      const start = message.byteOffset - header.length;
      if (payload === message && start >= 0) {
        const whole = Buffer.from(message.buffer, start, header.length + message.length);
        whole.set(header, 0);
        return whole;
      }
      return payload === undefined ? header : Buffer.concat([header, payload]);
    }
    const parts = frame(message, copied);
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  };

  const next = (): void => {
    while (!writing) {
      const item = queue.shift();
      if (item === undefined) {
        const waiting = whenFlushed;
        whenFlushed = [];
        for (const then of waiting) then();
        return;
      }
      if (sender._state !== SENDER_IDLE) {
        ws.send(item.message, { binary: true }, item.done);
        continue;
      }
      writing = true;
      socket.write(framed(item.message), (err) => {
        writing = false;
        item.done(err);
        next();
      });
    }
  };

  return {
    send(message, done) {
      queue.push({ message, done });
      next();
    },
    flushed(then) {
      if (!writing && queue.length === 0) then();
      else whenFlushed.push(then);
    },
  };
}
