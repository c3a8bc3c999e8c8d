// The structured HTTP heads a plain request and its response carry over one
// tunnel stream (the format is in packages/common/HEAD.md). The server parses
// the caller's HTTP once and the agent parses the apiserver's once; between
// them a head is a length-prefixed JSON object, checked here on both sides so
// that neither a hostile agent nor a hostile server can make the other buffer
// without bound or put a CR/LF into a header it then writes.
import type { Readable } from "node:stream";
import { TetherError } from "./coded-error.js";

export const ERR_TETHER_HEAD_INVALID = "ERR_TETHER_HEAD_INVALID";
export const ERR_TETHER_HEAD_TOO_LARGE = "ERR_TETHER_HEAD_TOO_LARGE";

/** Stream open metadata key naming the head format a stream carries; absent: raw HTTP/1.1. */
export const HEAD_METADATA = "head";
/** The one head format there is. */
export const HEAD_VERSION = "1";
/** What an agent that reads structured heads says in {@link AGENT_FEATURES_HEADER} when it connects. */
export const HEAD_FEATURE = `request-head/${HEAD_VERSION}`;

/**
 * The largest encoded head either side accepts (length prefix excluded). The
 * caller's head is bounded first by the server's HTTP parser (16 KiB by
 * default); this leaves room for the impersonation headers Tether adds.
 */
export const MAX_HEAD_BYTES = 64 * 1024;

export type HeaderPairs = [name: string, value: string][];

export interface RequestHead {
  method: string;
  /** Path and query as the member sees them. */
  path: string;
  headers: HeaderPairs;
}

export interface ResponseHead {
  status: number;
  headers: HeaderPairs;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** A field value as Node's parsers hand it over (latin1), without CR, LF or NUL. */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
/** An origin-form target: no whitespace, no control characters, no fragment. */
const PATH = /^\/[\x21-\x22\x24-\x7e\x80-\xff]*$/;

function invalid(message: string): TetherError {
  return new TetherError(ERR_TETHER_HEAD_INVALID, `malformed head: ${message}`);
}

function checkHeaders(headers: unknown): HeaderPairs {
  if (!Array.isArray(headers)) throw invalid("headers is not a list");
  for (const pair of headers) {
    if (!Array.isArray(pair) || pair.length !== 2) throw invalid("a header is not a [name, value] pair");
    const [name, value] = pair as unknown[];
    if (typeof name !== "string" || !TOKEN.test(name))
      throw invalid(`bad header name ${JSON.stringify(name)}`);
    if (typeof value !== "string" || !FIELD_VALUE.test(value))
      throw invalid(`bad value for header ${JSON.stringify(name)}`);
  }
  return headers as HeaderPairs;
}

function frame(value: object): Buffer {
  const json = Buffer.from(JSON.stringify(value), "utf8");
  if (json.length > MAX_HEAD_BYTES) {
    throw new TetherError(
      ERR_TETHER_HEAD_TOO_LARGE,
      `the head is ${json.length} bytes, at most ${MAX_HEAD_BYTES} cross the tunnel`,
    );
  }
  const out = Buffer.allocUnsafe(4 + json.length);
  out.writeUInt32BE(json.length, 0);
  json.copy(out, 4);
  return out;
}

/** Throws ERR_TETHER_HEAD_INVALID or ERR_TETHER_HEAD_TOO_LARGE for a head the peer would refuse. */
export function encodeRequestHead(head: RequestHead): Buffer {
  checkRequestHead(head);
  return frame({ method: head.method, path: head.path, headers: head.headers });
}

export function encodeResponseHead(head: ResponseHead): Buffer {
  checkResponseHead(head);
  return frame({ status: head.status, headers: head.headers });
}

function checkRequestHead(v: unknown): RequestHead {
  const o = v as Partial<RequestHead> | null;
  if (typeof o !== "object" || o === null) throw invalid("not an object");
  if (typeof o.method !== "string" || !TOKEN.test(o.method)) throw invalid("bad method");
  if (typeof o.path !== "string" || !PATH.test(o.path)) throw invalid("bad path");
  return { method: o.method, path: o.path, headers: checkHeaders(o.headers) };
}

function checkResponseHead(v: unknown): ResponseHead {
  const o = v as Partial<ResponseHead> | null;
  if (typeof o !== "object" || o === null) throw invalid("not an object");
  // 1xx are interim or switch protocols: a plain request's head is a final answer.
  if (typeof o.status !== "number" || !Number.isInteger(o.status) || o.status < 200 || o.status > 599)
    throw invalid("bad status");
  return { status: o.status, headers: checkHeaders(o.headers) };
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Reads one framed head off the front of `stream`; the bytes after it stay in
 * the stream (unshifted, the stream paused) for whoever pipes the body.
 */
function readFramed(stream: Readable): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let have = 0;
    let want = -1;
    const done = (err: Error | undefined, value?: unknown, rest?: Buffer) => {
      stream.off("data", onData);
      stream.off("end", onEnd);
      stream.off("error", onError);
      stream.off("close", onClose);
      stream.pause();
      if (rest && rest.length > 0) stream.unshift(rest);
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      have += chunk.length;
      if (want < 0 && have >= 4) {
        const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
        chunks.length = 0;
        chunks.push(all);
        want = all.readUInt32BE(0);
        if (want > MAX_HEAD_BYTES) {
          done(
            new TetherError(
              ERR_TETHER_HEAD_TOO_LARGE,
              `the peer announced a ${want}-byte head, at most ${MAX_HEAD_BYTES} are accepted`,
            ),
          );
          return;
        }
      }
      if (want < 0 || have < 4 + want) return;
      const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      let value: unknown;
      try {
        value = JSON.parse(utf8.decode(all.subarray(4, 4 + want)));
      } catch {
        done(invalid("not UTF-8 JSON"), undefined, all.subarray(4 + want));
        return;
      }
      done(undefined, value, all.subarray(4 + want));
    };
    const onEnd = () => done(invalid("the stream ended inside the head"));
    const onError = (err: Error) => done(err);
    // Not a malformed head: the session went, or the stream was reset without a reason.
    const onClose = () => done(new Error("the tunnel stream closed before the head arrived"));
    stream.on("data", onData);
    stream.on("end", onEnd);
    stream.on("error", onError);
    stream.on("close", onClose);
  });
}

export async function readRequestHead(stream: Readable): Promise<RequestHead> {
  return checkRequestHead(await readFramed(stream));
}

export async function readResponseHead(stream: Readable): Promise<ResponseHead> {
  return checkResponseHead(await readFramed(stream));
}

/**
 * Headers that describe one HTTP/1.1 connection, not the message: they never
 * cross the tunnel in a head and are never copied into what either side writes.
 */
export const CONNECTION_HEADERS: ReadonlySet<string> = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "te",
  "trailer",
  "upgrade",
]);
