/**
 * Runs a session over a `ws` WebSocket: binary messages only, one or more
 * whole frames per message, and the socket's own write callbacks as the
 * backpressure signal so the session never queues unboundedly inside ws.
 * When the installed ws allows it, messages are written to its socket
 * directly (ws-send.ts) and read off it without ws's copy (ws-receive.ts);
 * otherwise through ws.send and ws's 'message' event.
 */

import { WebSocket } from "ws";
import { ErrorCode, tetherError } from "./errors.js";
import { HEADER_SIZE, MAX_FRAME_PAYLOAD, MAX_MESSAGE_SIZE } from "./frame.js";
import type { SessionOptions } from "./options.js";
import { TLS_RECORD } from "./record-carry.js";
import { Session, type Transport } from "./session.js";
import { divertDataFrames } from "./ws-receive.js";
import { socketSender } from "./ws-send.js";

/**
 * Options to spread into `new WebSocketServer({...})` and `new WebSocket(url, {...})`
 * on both ends: no compression (bulk binary, and it costs memory per socket),
 * and no message larger than the protocol allows.
 */
export const WEBSOCKET_OPTIONS = {
  perMessageDeflate: false,
  maxPayload: MAX_MESSAGE_SIZE,
} as const;

/**
 * A TLS record carries at most 16 KiB. A full Data frame as one WebSocket
 * message (12 + 65,536 bytes and a 10- or 14-byte WebSocket header) fills four
 * records and spills 22 or 26 bytes into a fifth: one more record to seal on
 * the sending end and one more socket read on the other, per message. So over
 * a WebSocket, unless the caller sets the frame sizes, a full Data frame
 * carries what fills exactly four records: the message then needs only the
 * 4-byte header of a 16-bit length, plus the 4-byte mask the client (the
 * agent) adds. Frames still reach 65,536 to finish a stream's last queued
 * chunk (preferredFrameSize, stream.ts takeFrame).
 */
export function recordFittingFrameSize(role: "client" | "server"): number {
  return 4 * TLS_RECORD - HEADER_SIZE - (role === "client" ? 8 : 4);
}

/**
 * Starts a session on an open WebSocket. The client end (the agent, which
 * dialed) passes role "client", the accepting end "server".
 */
export function sessionFromWebSocket(ws: WebSocket, options: SessionOptions): Session {
  if (ws.readyState !== WebSocket.OPEN) {
    throw tetherError(ErrorCode.INVALID_ARGUMENT, `WebSocket must be open, readyState is ${ws.readyState}`);
  }
  ws.binaryType = "nodebuffer";
  const direct = socketSender(ws);
  const transport: Transport = {
    send(message, done) {
      if (ws.readyState !== WebSocket.OPEN) {
        done(tetherError(ErrorCode.TRANSPORT_CLOSED, "WebSocket is not open"));
        return;
      }
      if (direct !== undefined) direct.send(message, done);
      else ws.send(message, { binary: true }, done);
    },
    close(graceful) {
      if (!graceful) ws.terminate();
      // The close frame goes after every message still waiting to be written.
      else if (direct !== undefined) direct.flushed(() => ws.close(1000));
      else ws.close(1000);
    },
  };
  const session = new Session(transport, {
    ...options,
    preferredFrameSize:
      options.preferredFrameSize ??
      Math.min(options.maxFrameSize ?? MAX_FRAME_PAYLOAD, recordFittingFrameSize(options.role)),
  });
  divertDataFrames(ws, (parts) => session.receive(parts));
  // Still needed once frames go back to ws (see ws-receive.ts), or when they never left it.
  ws.on("message", (data, isBinary) => {
    if (!isBinary) {
      session.protocolError("text message on a tunnel WebSocket");
      return;
    }
    session.receive(data as Buffer);
  });
  ws.on("error", (err) => session.transportClosed(err));
  ws.on("close", () => session.transportClosed());
  return session;
}
