/**
 * A WebSocket client must mask every byte it sends (RFC 6455). ws does it by
 * copying each message into a fresh buffer, since it may not modify the
 * caller's; on the agent's bulk path that allocation per 64 KiB message cost
 * as much as everything else the tunnel adds. Messages from the frame pool
 * are ours to rewrite until sent, so for those the mask is applied in place,
 * by ws's own framing code (Sender.frame, a fresh random key per message as
 * ws does), and the frame goes to ws's socket the way ws's sender writes it.
 *
 * This reaches into ws: the Sender export (missing from its type definitions)
 * and a WebSocket's `_socket` and `_sender`. It is used only when they look as
 * expected, masking was not customised, and ws's sender has nothing queued
 * (it queues only while compressing, which WEBSOCKET_OPTIONS turns off), so
 * frames never interleave; otherwise messages go through ws.send.
 * websocket.test.ts fails if the installed ws no longer allows it.
 */

import type { Duplex } from "node:stream";
import type { WebSocket } from "ws";
import * as wsModule from "ws";

interface FrameOptions {
  fin: boolean;
  mask: boolean;
  opcode: number;
  readOnly: boolean;
  rsv1: boolean;
}

type Frame = (data: Buffer, options: FrameOptions) => Buffer[];

const BINARY = 0x02;
const SENDER_IDLE = 0; // ws's Sender state DEFAULT: nothing queued
const frame = (wsModule as unknown as { Sender?: { frame?: Frame } }).Sender?.frame;

/** Sends `message` masked in place; false when it cannot right now (use ws.send). */
export type InPlaceSend = (message: Buffer, done: (err?: Error | null) => void) => boolean;

/** The in-place sender for a client WebSocket, or undefined when this ws cannot take it. */
export function inPlaceMaskedSender(ws: WebSocket): InPlaceSend | undefined {
  const internals = ws as unknown as {
    _isServer?: unknown;
    _socket?: Duplex;
    _sender?: { _state?: unknown; _generateMask?: unknown };
  };
  const socket = internals._socket;
  const sender = internals._sender;
  if (
    typeof frame !== "function" ||
    internals._isServer !== false ||
    typeof socket?.write !== "function" ||
    typeof socket.cork !== "function" ||
    typeof sender?._state !== "number" ||
    sender._generateMask !== undefined
  ) {
    return undefined;
  }
  const options: FrameOptions = { fin: true, mask: true, opcode: BINARY, readOnly: false, rsv1: false };
  return (message, done) => {
    if (sender._state !== SENDER_IDLE) return false;
    const [header, masked] = frame(message, options);
    socket.cork();
    socket.write(header!);
    socket.write(masked!, done);
    socket.uncork();
    return true;
  };
}
