// Errors answered as Kubernetes `Status` objects, so kubectl and client
// libraries print the message instead of a parse error.
import type { ServerResponse } from "node:http";

export type StatusReason =
  | "BadRequest"
  | "Unauthorized"
  | "Forbidden"
  | "NotFound"
  | "RequestTimeout"
  | "MisdirectedRequest"
  | "TooManyRequests"
  | "ServiceUnavailable"
  | "InternalError"
  | "BadGateway";

const CODES: Record<StatusReason, number> = {
  BadRequest: 400,
  Unauthorized: 401,
  Forbidden: 403,
  NotFound: 404,
  RequestTimeout: 408,
  MisdirectedRequest: 421,
  TooManyRequests: 429,
  InternalError: 500,
  BadGateway: 502,
  ServiceUnavailable: 503,
};

/** The HTTP status a reason is answered with. */
export function statusCodeOf(reason: StatusReason): number {
  return CODES[reason];
}

export function statusBody(reason: StatusReason, message: string, retryAfterSeconds?: number): string {
  return JSON.stringify({
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message,
    reason,
    ...(retryAfterSeconds === undefined ? {} : { details: { retryAfterSeconds } }),
    code: CODES[reason],
  });
}

/**
 * Writes a Status response (or just cuts the response when its head is already
 * out). A 503 for an agent that is away carries no Retry-After on purpose:
 * client-go would retry silently for most of a minute instead of saying so.
 * Limits that free up soon (429, a full session's 503) pass `retryAfterSeconds`,
 * sent as Retry-After and as the Status's details.retryAfterSeconds.
 */
export function sendStatus(
  res: ServerResponse,
  reason: StatusReason,
  message: string,
  retryAfterSeconds?: number,
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = statusBody(reason, message, retryAfterSeconds);
  res.writeHead(CODES[reason], {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
    ...(reason === "Unauthorized" ? { "www-authenticate": 'Bearer realm="tether"' } : {}),
    ...(retryAfterSeconds === undefined ? {} : { "retry-after": String(retryAfterSeconds) }),
  });
  res.end(body);
}

/** The same, as raw HTTP/1.1 on a socket whose request asked for an upgrade. */
export function statusResponseHead(
  reason: StatusReason,
  message: string,
  retryAfterSeconds?: number,
): string {
  const body = statusBody(reason, message, retryAfterSeconds);
  return (
    `HTTP/1.1 ${CODES[reason]} ${reason}\r\n` +
    "Content-Type: application/json\r\n" +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    (retryAfterSeconds === undefined ? "" : `Retry-After: ${retryAfterSeconds}\r\n`) +
    "Connection: close\r\n\r\n" +
    body
  );
}
