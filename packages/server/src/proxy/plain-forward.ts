// A plain (non-upgrade) request forwarded on one tunnel stream with a
// structured head (packages/common/HEAD.md): the caller's request is parsed
// once, by the listener; its method, path and rewritten headers cross as one
// head, the body follows as bytes and the stream's FIN ends it. The member's
// answer comes back the same way. Only the compat subset of a request and
// response is used (method, url, headers, the body as a stream, writeHead,
// write, end), so an HTTP/2 caller is forwarded by the same code.
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http";
import { responseCut, stripConnectionHeaders, writeResponseHead } from "../http/connection-headers.js";
import type { Duplex, Readable } from "node:stream";
import { neverAccepted, ReplayableBody } from "./replayable-body.js";
import {
  CONNECTION_HEADERS,
  declaredLength,
  ERR_TETHER_HEAD_INVALID,
  ERR_TETHER_HEAD_TOO_LARGE,
  encodeRequestHead,
  type HeaderPairs,
  pipeBody,
  type ResponseHead,
  readResponseHead,
  sendStatus,
  type TetherError,
} from "@tether/common";

export interface PlainForward {
  req: IncomingMessage;
  res: ServerResponse;
  /** Path and query on the member. */
  path: string;
  /** The request's headers, already rewritten for the member (forwarded-headers.ts). */
  headers: IncomingHttpHeaders;
  /** Opens the tunnel stream the request travels on (throws if the session is full). */
  open(): Duplex;
  /** The member answered: its status and the body as it will reach the caller. */
  answered(status: number, body: Readable): void;
  /** The stream failed before the member answered: the caller gets a Status. */
  failure(err: Error): void;
  /**
   * The agent never took the stream (replayable-body.ts neverAccepted) and
   * `body` can be sent again: true when the caller forwards the request anew
   * (on another session, with the same `body`), false to have it fail.
   */
  refused?(err: Error, body: ReplayableBody): boolean;
  /** The body as a former attempt read it; a first attempt reads `req`. */
  body?: ReplayableBody;
}

/** The pairs of a parsed header object, minus what is the caller's connection's and HTTP/2 pseudo-headers. */
function requestPairs(headers: IncomingHttpHeaders): HeaderPairs {
  const pairs: HeaderPairs = [];
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || name.startsWith(":") || CONNECTION_HEADERS.has(name) || name === "host")
      continue;
    if (Array.isArray(value)) for (const v of value) pairs.push([name, v]);
    else pairs.push([name, value]);
  }
  return pairs;
}

/** The member's headers as the caller gets them: what frames a connection is the listener's to set, not the agent's. */
function responseHeaders(head: ResponseHead): OutgoingHttpHeaders {
  const out: Record<string, string | string[]> = {};
  for (const [raw, value] of head.headers) {
    const name = raw.toLowerCase();
    const had = out[name];
    if (had === undefined) out[name] = value;
    else if (Array.isArray(had)) had.push(value);
    else out[name] = [had, value];
  }
  // The Connection header's own list too: they are hop-by-hop by the member's word.
  stripConnectionHeaders(out);
  for (const name of CONNECTION_HEADERS) delete out[name];
  return out;
}

export function forwardPlain(f: PlainForward): void {
  const { req, res } = f;
  let encoded: Buffer;
  try {
    encoded = encodeRequestHead({
      method: req.method ?? "GET",
      path: f.path,
      headers: requestPairs(f.headers),
    });
  } catch (err) {
    sendStatus(res, "BadRequest", (err as Error).message);
    return;
  }
  const body = f.body ?? new ReplayableBody(req);
  // Before any answer, a stream the agent never took goes elsewhere when the caller can send it again.
  const failed = (err: Error) => {
    if (neverAccepted(err) && body.replayable && f.refused?.(err, body)) return;
    body.release();
    f.failure(err);
  };
  let stream: Duplex;
  try {
    stream = f.open();
  } catch (err) {
    failed(err as Error);
    return;
  }
  let answered = false;
  // The caller went away (or its response failed): the stream goes too, and the agent cuts the apiserver request.
  res.on("close", () => {
    if (responseCut(res)) stream.destroy();
  });
  // Before the head, readResponseHead sees the error; after it the response is cut.
  stream.on("error", () => {
    if (answered) res.destroy();
  });
  stream.write(encoded);
  body.pipeTo(stream);
  readResponseHead(stream).then(
    (head) => {
      answered = true;
      body.release();
      if (res.destroyed) return;
      const headers = responseHeaders(head);
      writeResponseHead(res, head.status, headers);
      // A watch may send nothing for minutes, and clients act on the head alone. Body bytes that came
      // with the head take it along in their first write instead: one TLS record, not two.
      if (stream.readableLength === 0) res.flushHeaders();
      f.answered(head.status, stream);
      // Bytes past a declared length would reach an HTTP/1.1 caller as the next response.
      const bodyless = req.method === "HEAD" || head.status === 204 || head.status === 304;
      pipeBody(
        stream,
        res,
        bodyless ? undefined : declaredLength(headers["content-length"] as string | string[] | undefined),
        () => stream.destroy(),
      );
    },
    (err: TetherError) => {
      answered = true;
      stream.destroy();
      if (res.destroyed) return body.release();
      if (err.code === ERR_TETHER_HEAD_INVALID || err.code === ERR_TETHER_HEAD_TOO_LARGE) {
        body.release();
        sendStatus(res, "BadGateway", `the Tether agent answered badly: ${err.message}`);
      } else failed(err);
    },
  );
}
