/**
 * The typed header a SYN carries: which service the opener wants and a few
 * string key/values about the request. It is small and strictly bounded so an
 * acceptor can decide on it before committing any resources.
 */

import { ErrorCode, tetherError } from "./errors.js";

export const MAX_OPEN_HEADER = 4096;
export const MAX_METADATA_ENTRIES = 32;
export const MAX_METADATA_VALUE = 1024;

/** Service names look like DNS labels or `name.namespace:port`, nothing fancier. */
const SERVICE_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,62}$/;
/** Keys are lowercase tokens; a leading letter or digit keeps `__proto__` and friends out. */
const KEY_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export type Metadata = Readonly<Record<string, string>>;

export interface OpenRequest {
  /** The stream id the opener chose. */
  readonly id: number;
  readonly service: string;
  readonly metadata: Metadata;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function invalid(message: string): Error {
  return tetherError(ErrorCode.INVALID_ARGUMENT, message);
}

/** Throws ERR_TETHER_INVALID_ARGUMENT when the header would not be accepted by a peer. */
export function encodeOpenHeader(service: string, metadata: Metadata = {}): Buffer {
  if (typeof service !== "string" || !SERVICE_RE.test(service)) {
    throw invalid(`invalid service name ${JSON.stringify(service)}`);
  }
  const entries = Object.entries(metadata);
  if (entries.length > MAX_METADATA_ENTRIES) {
    throw invalid(`metadata has ${entries.length} entries, at most ${MAX_METADATA_ENTRIES} allowed`);
  }
  const parts: Buffer[] = [
    Buffer.from([service.length]),
    Buffer.from(service, "ascii"),
    Buffer.from([entries.length]),
  ];
  for (const [key, value] of entries) {
    if (!KEY_RE.test(key)) throw invalid(`invalid metadata key ${JSON.stringify(key)}`);
    if (typeof value !== "string") throw invalid(`metadata value for ${key} is not a string`);
    const bytes = Buffer.from(value, "utf8");
    if (bytes.length > MAX_METADATA_VALUE) {
      throw invalid(`metadata value for ${key} is ${bytes.length} bytes, at most ${MAX_METADATA_VALUE}`);
    }
    const lengths = Buffer.allocUnsafe(3);
    lengths[0] = key.length;
    lengths.writeUInt16BE(bytes.length, 1);
    parts.push(lengths.subarray(0, 1), Buffer.from(key, "ascii"), lengths.subarray(1), bytes);
  }
  const out = Buffer.concat(parts);
  if (out.length > MAX_OPEN_HEADER) {
    throw invalid(`open header is ${out.length} bytes, at most ${MAX_OPEN_HEADER}`);
  }
  return out;
}

/** Returns the decoded header, or a string saying why it is malformed. */
export function decodeOpenHeader(buf: Buffer): { service: string; metadata: Metadata } | string {
  if (buf.length > MAX_OPEN_HEADER) return "open header too large";
  let offset = 0;
  const take = (n: number): Buffer | undefined => {
    if (offset + n > buf.length) return undefined;
    const part = buf.subarray(offset, offset + n);
    offset += n;
    return part;
  };
  const serviceLength = take(1)?.[0];
  if (serviceLength === undefined) return "open header truncated";
  const service = take(serviceLength)?.toString("latin1");
  if (service === undefined || !SERVICE_RE.test(service)) return "invalid service name";
  const count = take(1)?.[0];
  if (count === undefined) return "open header truncated";
  if (count > MAX_METADATA_ENTRIES) return "too many metadata entries";
  const metadata: Record<string, string> = {};
  for (let i = 0; i < count; i++) {
    const keyLength = take(1)?.[0];
    if (keyLength === undefined) return "open header truncated";
    const key = take(keyLength)?.toString("latin1");
    if (key === undefined || !KEY_RE.test(key)) return "invalid metadata key";
    if (Object.hasOwn(metadata, key)) return `duplicate metadata key ${key}`;
    const valueLength = take(2)?.readUInt16BE(0);
    if (valueLength === undefined) return "open header truncated";
    if (valueLength > MAX_METADATA_VALUE) return "metadata value too large";
    const raw = take(valueLength);
    if (raw === undefined) return "open header truncated";
    try {
      metadata[key] = utf8.decode(raw);
    } catch {
      return "metadata value is not UTF-8";
    }
  }
  if (offset !== buf.length) return "trailing bytes after open header";
  return { service, metadata };
}
