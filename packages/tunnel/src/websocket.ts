/**
 * Runs a session over a `ws` WebSocket: binary messages only, one or more
 * whole frames per message, and the socket's own write callbacks as the
 * backpressure signal so the session never queues unboundedly inside ws.
 */

import { WebSocket } from "ws";
import { ErrorCode, tetherError } from "./errors.js";
import { MAX_MESSAGE_SIZE } from "./frame.js";
import { isPooled } from "./frame-pool.js";
import { inPlaceMaskedSender } from "./masked-send.js";
import type { SessionOptions } from "./options.js";
import { Session, type Transport } from "./session.js";

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
 * Starts a session on an open WebSocket. The client end (the agent, which
 * dialed) passes role "client", the accepting end "server".
 */
export function sessionFromWebSocket(ws: WebSocket, options: SessionOptions): Session {
  if (ws.readyState !== WebSocket.OPEN) {
    throw tetherError(ErrorCode.INVALID_ARGUMENT, `WebSocket must be open, readyState is ${ws.readyState}`);
  }
  ws.binaryType = "nodebuffer";
  const sendInPlace = inPlaceMaskedSender(ws);
  const transport: Transport = {
    send(message, done) {
      if (ws.readyState !== WebSocket.OPEN) {
        done(tetherError(ErrorCode.TRANSPORT_CLOSED, "WebSocket is not open"));
        return;
      }
      if (sendInPlace !== undefined && isPooled(message) && sendInPlace(message, done)) return;
      ws.send(message, { binary: true }, done);
    },
    close(graceful) {
      if (graceful) ws.close(1000);
      else ws.terminate();
    },
  };
  const session = new Session(transport, options);
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
