// Headers about one HTTP/1.1 connection (RFC 9110 7.6.1), which HTTP/2
// forbids (RFC 9113 8.2.2): a member's response relayed to an h2 caller
// must lose them, or Node refuses the whole head
// (ERR_HTTP2_INVALID_CONNECTION_HEADERS) and the caller gets nothing.
import type { IncomingHttpHeaders } from "node:http";

const CONNECTION_SPECIFIC = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"];

/** Deletes, in place, the connection-specific headers and those the Connection header names. */
export function stripConnectionHeaders(headers: IncomingHttpHeaders): void {
  const named = headers.connection;
  for (const name of (Array.isArray(named) ? named.join(",") : (named ?? "")).split(",")) {
    const token = name.trim().toLowerCase();
    if (token) delete headers[token];
  }
  for (const name of CONNECTION_SPECIFIC) delete headers[name];
  // TE is allowed only as "trailers" (RFC 9113 8.2.2); a response has no use for it.
  delete headers.te;
}

/**
 * Whether a response ended before it went out whole: the caller went away or
 * it was cut. An h2 response whose stream was reset counts as finished too
 * (writableFinished); only end() sets writableEnded.
 */
export function responseCut(res: { writableFinished: boolean; writableEnded: boolean }): boolean {
  return !(res.writableFinished && res.writableEnded);
}

/**
 * The member's status and headers, set one by one before writeHead: headers
 * given to writeHead alone are not readable back (getHeader), and the drain's
 * watch end (lifecycle/watch-end.ts) reads the content type to find events.
 */
export function writeResponseHead(
  res: {
    setHeader(name: string, value: number | string | readonly string[]): unknown;
    writeHead(status: number): unknown;
  },
  status: number,
  headers: Record<string, number | string | readonly string[] | undefined>,
): void {
  for (const [name, value] of Object.entries(headers)) if (value !== undefined) res.setHeader(name, value);
  res.writeHead(status);
}
