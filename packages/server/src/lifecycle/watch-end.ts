// Ends a watch response between two events, so a client sees the chunked
// response end (as when the apiserver closes a watch at its timeout) and
// resumes from its last resourceVersion; cut mid-event it would see a torn
// object and relist. Whoever writes the response (the proxy) keeps writing:
// what comes after the cut is dropped, and the upstream stream goes when its
// session closes.
import type { IncomingMessage, ServerResponse } from "node:http";

/** How the member frames a watch's events: JSON lines, or protobuf's 4-byte length prefix. */
type Framing = "json" | "protobuf";

/** Whether a request asks for a watch (?watch=true|1, or the legacy /watch/ paths). */
export function isWatchRequest(req: IncomingMessage): boolean {
  const url = req.url ?? "";
  const query = url.indexOf("?");
  if (query >= 0 && /(^|&)watch=(true|1)(&|$)/i.test(url.slice(query + 1))) return true;
  return /\/watch\//.test(query >= 0 ? url.slice(0, query) : url);
}

function framingOf(contentType: unknown): Framing | undefined {
  if (typeof contentType !== "string") return undefined;
  const type = contentType.toLowerCase();
  if (type.startsWith("application/json")) return "json";
  if (type.startsWith("application/vnd.kubernetes.protobuf")) return "protobuf";
  return undefined;
}

/** Where events end in a byte stream. */
class EventBoundaries {
  private lastByte = 0x0a;
  private header = 0;
  private headerBytes = 0;
  private remaining = 0;

  constructor(private readonly framing: Framing) {}

  get atBoundary(): boolean {
    if (this.framing === "json") return this.lastByte === 0x0a;
    return this.headerBytes === 0 && this.remaining === 0;
  }

  /**
   * Takes `chunk`, or with `stopAtBoundary` only up to where the event under
   * way ends; returns how many bytes it took.
   */
  take(chunk: Buffer, stopAtBoundary: boolean): number {
    if (chunk.length === 0) return 0;
    if (this.framing === "json") {
      const end = stopAtBoundary ? chunk.indexOf(0x0a) : -1;
      const taken = end < 0 ? chunk.length : end + 1;
      this.lastByte = chunk[taken - 1]!;
      return taken;
    }
    let i = 0;
    while (i < chunk.length) {
      if (this.remaining > 0) {
        const n = Math.min(this.remaining, chunk.length - i);
        this.remaining -= n;
        i += n;
      } else {
        this.header = (this.header * 256 + chunk[i]!) >>> 0;
        this.headerBytes++;
        i++;
        if (this.headerBytes === 4) {
          this.remaining = this.header;
          this.header = 0;
          this.headerBytes = 0;
        }
      }
      if (stopAtBoundary && this.atBoundary) return i;
    }
    return i;
  }
}

type WriteCallback = (err?: Error | null) => void;

/**
 * Watches `res` (a response to a watch request) so that `end()` can finish
 * it at the next event boundary. A response in a framing this does not know
 * (CBOR, an error Status) is left to finish or be cut on its own.
 */
export class WatchEnd {
  private boundaries: EventBoundaries | undefined;
  private framingKnown = false;
  private wanted = false;
  private ended = false;

  constructor(private readonly res: ServerResponse) {
    const write = res.write.bind(res) as (chunk: unknown, ...rest: unknown[]) => boolean;
    const end = res.end.bind(res) as (...args: unknown[]) => ServerResponse;
    res.write = ((chunk: unknown, ...rest: unknown[]) => {
      if (this.ended) return done(rest);
      const bytes = toBuffer(chunk, rest[0]);
      // The head is set by the time the body is written, sent or not.
      const b = this.framing(true);
      if (!b || bytes === undefined) return write(chunk, ...rest);
      const taken = b.take(bytes, this.wanted);
      if (this.wanted && b.atBoundary) {
        if (taken > 0) write(bytes.subarray(0, taken));
        this.finish(end);
        return done(rest);
      }
      return write(chunk, ...rest);
    }) as ServerResponse["write"];
    res.end = ((...args: unknown[]) => {
      if (this.ended) {
        done(args);
        return res;
      }
      this.ended = true;
      return end(...args);
    }) as ServerResponse["end"];
    this.endNow = () => this.finish(end);
  }

  private readonly endNow: () => void;

  /** Ends the response now if it is between events, else once the event under way is written. */
  end(): void {
    if (this.ended) return;
    this.wanted = true;
    if (this.res.headersSent && this.framing()?.atBoundary) this.endNow();
  }

  private framing(writing = false): EventBoundaries | undefined {
    if (!this.framingKnown && (writing || this.res.headersSent)) {
      this.framingKnown = true;
      const framing = this.res.statusCode === 200 ? framingOf(this.res.getHeader("content-type")) : undefined;
      if (framing) this.boundaries = new EventBoundaries(framing);
    }
    return this.boundaries;
  }

  private finish(end: (...args: unknown[]) => ServerResponse): void {
    if (this.ended) return;
    this.ended = true;
    end();
  }
}

function toBuffer(chunk: unknown, encoding: unknown): Buffer | undefined {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  if (typeof chunk === "string")
    return Buffer.from(chunk, typeof encoding === "string" ? (encoding as BufferEncoding) : "utf8");
  return undefined;
}

/** Calls a write's callback, if it was given one, as a successful write would. */
function done(args: unknown[]): boolean {
  const cb = args.find((a) => typeof a === "function") as WriteCallback | undefined;
  if (cb) process.nextTick(cb);
  return true;
}
