// Errors answered as Kubernetes `Status` objects, so kubectl and client
// libraries print the message instead of a parse error.
import type { ServerResponse } from "node:http";

export type StatusReason =
  | "BadRequest"
  | "Unauthorized"
  | "Forbidden"
  | "NotFound"
  | "ServiceUnavailable"
  | "InternalError"
  | "BadGateway";

const CODES: Record<StatusReason, number> = {
  BadRequest: 400,
  Unauthorized: 401,
  Forbidden: 403,
  NotFound: 404,
  InternalError: 500,
  BadGateway: 502,
  ServiceUnavailable: 503,
};

export function statusBody(reason: StatusReason, message: string): string {
  return JSON.stringify({
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message,
    reason,
    code: CODES[reason],
  });
}

/**
 * Writes a Status response (or just cuts the response when its head is already
 * out). A 503 carries no Retry-After on purpose: client-go would retry
 * silently for most of a minute instead of saying that the agent is away.
 */
export function sendStatus(res: ServerResponse, reason: StatusReason, message: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = statusBody(reason, message);
  res.writeHead(CODES[reason], {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
    ...(reason === "Unauthorized" ? { "www-authenticate": 'Bearer realm="tether"' } : {}),
  });
  res.end(body);
}

/** The same, as raw HTTP/1.1 on a socket whose request asked for an upgrade. */
export function statusResponseHead(reason: StatusReason, message: string): string {
  const body = statusBody(reason, message);
  return (
    `HTTP/1.1 ${CODES[reason]} ${reason}\r\n` +
    "Content-Type: application/json\r\n" +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    "Connection: close\r\n\r\n" +
    body
  );
}
