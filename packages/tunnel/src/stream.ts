/**
 * One multiplexed stream, as a Node Duplex that also answers the handful of
 * net.Socket calls http, tls and pipeline make, so it can stand in for a
 * socket (http.Agent's createConnection, server.emit("connection"), TLS).
 *
 * Inbound bytes wait in `inbox` until the Readable asks for them (_read);
 * only then do they count as consumed and earn the peer new credit, so a
 * reader that stops reading stops the sender after one window.
 */

import { Duplex } from "node:stream";
import { ResetCode, resetCodeName } from "./codes.js";
import { ErrorCode, type TetherError, tetherError } from "./errors.js";
import { encodeData, Flag, FrameType, HEADER_SIZE, INITIAL_WINDOW, writeHeader } from "./frame.js";
import { POOLED_FRAME_MIN, pooledDataFrame, pooledFrame, releaseFrame } from "./frame-pool.js";
import type { Metadata } from "./open-header.js";
import { ReceiveWindow } from "./window.js";
import type { WindowBudget } from "./window-budget.js";

/** What a stream needs from its session; the session is the only implementation. */
export interface StreamHost {
  readonly maxWindow: number;
  /** Receive window a new stream starts with (the session's estimate of the path's BDP). */
  readonly initialWindow: number;
  /** Receive memory all windows of the session share beyond their initial 256 KiB. */
  readonly windowBudget: WindowBudget;
  schedule(stream: TunnelStream): void;
  sendWindowUpdate(stream: TunnelStream, delta: number): void;
  sendReset(stream: TunnelStream, code: number): void;
  streamDestroyed(stream: TunnelStream): void;
}

/**
 * Received payload is a view of the socket's read buffers (64 KiB slabs that
 * several reads share). A piece much smaller than its buffer is copied out
 * before it is kept: a reader that does not read holds at most its window,
 * and without the copy a window of tiny pieces, each in a different slab,
 * would hold thousands of times that.
 */
const MAX_HELD_RATIO = 8;

function detached(piece: Buffer): Buffer {
  return piece.length * MAX_HELD_RATIO < piece.buffer.byteLength ? Buffer.from(piece) : piece;
}

/** A write up to this size counts as small (see SMALL_ALLOWANCE in path-estimator.ts). */
const SMALL_SEND = 4096;

interface Outgoing {
  chunk: Buffer;
  offset: number;
  done: (err?: Error | null) => void;
}

export class TunnelStream extends Duplex {
  readonly id: number;
  readonly service: string;
  readonly metadata: Metadata;
  /** "local" when this end called open(), "remote" when the peer did. */
  readonly initiator: "local" | "remote";
  /** Mirrors net.Socket: a stream is usable at once (data may precede the ACK). */
  readonly connecting = false;
  readonly pending = false;

  /** @internal */ readonly recvWindow: ReceiveWindow;
  /** @internal */ sendWindow = INITIAL_WINDOW;
  /** @internal */ localFin = false;
  /** @internal */ remoteFin = false;
  /** @internal */ acked: boolean;
  /** @internal Accepted, and the ACK not yet sent: it goes with the stream's first frame (session.ts settleAcks). */
  ackPending = false;

  private host: StreamHost | undefined;
  private readonly outbox: Outgoing[] = [];
  private finalDone: ((err?: Error | null) => void) | undefined;
  private readonly inbox: Buffer[] = [];
  private wantsData = false;
  private endAfterInbox = false;
  private resetCode: number | undefined;
  private idleTimer: NodeJS.Timeout | undefined;

  /** @internal — streams are made by Session.open() and the 'stream' event. */
  constructor(
    host: StreamHost,
    id: number,
    service: string,
    metadata: Metadata,
    initiator: "local" | "remote",
  ) {
    super({ allowHalfOpen: true, writableHighWaterMark: 64 * 1024 });
    this.host = host;
    this.id = id;
    this.service = service;
    this.metadata = metadata;
    this.initiator = initiator;
    this.acked = initiator === "remote";
    this.recvWindow = new ReceiveWindow(host.maxWindow, host.initialWindow, host.windowBudget);
  }

  /** Bytes received and not yet handed to the reader. */
  get bufferedInbound(): number {
    return this.recvWindow.buffered;
  }

  /**
   * Resets the stream with a wire code the peer sees (ResetCode or an
   * application code >= 0x100), then destroys it locally without an error.
   */
  reset(code: number = ResetCode.CANCEL): this {
    if (!Number.isInteger(code) || code <= 0 || code > 0xffffffff) {
      throw new RangeError(`reset code must be an integer in [1, 2^32-1], got ${code}`);
    }
    this.resetCode = code;
    return this.destroy();
  }

  // ---- net.Socket compatibility: what http, tls and agents call on sockets ----

  setNoDelay(_noDelay?: boolean): this {
    return this;
  }

  setKeepAlive(_enable?: boolean, _initialDelay?: number): this {
    return this;
  }

  ref(): this {
    return this;
  }

  unref(): this {
    return this;
  }

  address(): Record<string, never> {
    return {};
  }

  /** Emits 'timeout' after `ms` without reads or writes, like net.Socket; 0 turns it off. */
  setTimeout(ms: number, callback?: () => void): this {
    if (this.idleTimer !== undefined) {
      clearTimeout(this.idleTimer);
      this.idleTimer = undefined;
    }
    if (ms > 0 && !this.destroyed) {
      this.idleTimer = setTimeout(() => this.emit("timeout"), ms);
      this.idleTimer.unref();
      if (callback) this.once("timeout", callback);
    } else if (callback) {
      this.removeListener("timeout", callback);
    }
    return this;
  }

  /** Ends the writable side, then destroys once it has flushed. */
  destroySoon(): void {
    if (this.writable) this.end();
    if (this.writableFinished) this.destroy();
    else this.once("finish", () => this.destroy());
  }

  // ---- Duplex internals ----

  override _read(): void {
    this.wantsData = true;
    this.drainInbox();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    this.touch();
    if (chunk.length === 0 || this.host === undefined) {
      done(this.host === undefined ? tetherError(ErrorCode.SESSION_CLOSED, "stream is detached") : null);
      return;
    }
    this.outbox.push({ chunk, offset: 0, done });
    this.host.schedule(this);
  }

  override _final(done: (err?: Error | null) => void): void {
    if (this.host === undefined) {
      // After the peer's FIN and CANCEL (a socket closed after shutdown) there
      // is nobody to tell: ending is no error, as end() on such a socket isn't.
      done(this.remoteFin ? null : tetherError(ErrorCode.SESSION_CLOSED, "stream is detached"));
      return;
    }
    this.finalDone = done;
    this.host.schedule(this);
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    // Only now: a finished stream whose reader has not read everything still holds it.
    this.recvWindow.release();
    const host = this.host;
    this.host = undefined;
    if (host !== undefined) {
      if (!(this.localFin && this.remoteFin)) {
        const fromError = (err as TetherError | null)?.resetCode;
        host.sendReset(
          this,
          this.resetCode ??
            (err === null
              ? ResetCode.CANCEL
              : typeof fromError === "number"
                ? fromError
                : ResetCode.INTERNAL_ERROR),
        );
      }
      host.streamDestroyed(this);
    }
    this.outbox.length = 0;
    this.inbox.length = 0;
    done(err);
  }

  // ---- called by the session ----

  /** @internal Payload already passed the window check. */
  onData(payload: Buffer): void {
    this.touch();
    const own = detached(payload);
    if (this.wantsData && this.inbox.length === 0) this.deliver(own);
    else this.inbox.push(own);
  }

  /** @internal */
  onRemoteFin(): void {
    this.remoteFin = true;
    if (this.inbox.length === 0) this.push(null);
    else this.endAfterInbox = true;
  }

  /**
   * @internal The peer reset the stream: no reset goes back. A CANCEL after the
   * peer's FIN only says it stopped reading, as a closed socket would after
   * shutdown: what it sent is complete, so the reader still gets all of it and
   * no error is raised (a later write fails, as on a socket).
   */
  onRemoteReset(code: number): void {
    this.detach();
    if (code === ResetCode.CANCEL && this.remoteFin) {
      if (this.readableEnded) this.destroy();
      else this.once("end", () => this.destroy());
      return;
    }
    this.destroy(
      tetherError(ErrorCode.STREAM_RESET, `stream ${this.id} reset by peer: ${resetCodeName(code)}`, {
        resetCode: code,
      }),
    );
  }

  /** @internal The session is gone or finished with this stream: nothing more goes on the wire. */
  detach(): void {
    this.host = undefined;
  }

  /** @internal Ends the stream because the session ended. */
  terminate(err: Error | undefined): void {
    this.detach();
    this.destroy(err);
  }

  /** @internal Both directions have seen FIN: the stream needs no more frames. */
  get finished(): boolean {
    return this.localFin && this.remoteFin;
  }

  /** @internal Whether the scheduler can take a frame from this stream now. */
  get sendable(): boolean {
    if (this.outbox.length > 0) return this.sendWindow > 0;
    return this.finalDone !== undefined;
  }

  /** @internal Whether all this stream has queued is one small write (or just its FIN). */
  get smallSend(): boolean {
    if (this.outbox.length > 1) return false;
    const head = this.outbox[0];
    return head === undefined || head.chunk.length - head.offset <= SMALL_SEND;
  }

  /**
   * @internal The next frame to send: `max` payload bytes, or up to `stretch`
   * (>= max) when that finishes the last chunk queued. A writer of 64 KiB
   * chunks (stream.pipe, most relays) waits for 'drain' before its next
   * chunk, so framing one at 65,516 bytes (four TLS records, websocket.ts)
   * left a 20-byte tail that went out as a frame and a WebSocket message of
   * its own: twice the messages, socket writes and reads per byte. Finishing
   * the chunk in one 65,536-byte frame costs a fifth TLS record instead.
   */
  takeFrame(max: number, stretch = max): Buffer | undefined {
    const head = this.outbox[0];
    if (head !== undefined) {
      if (this.sendWindow === 0) return undefined;
      const limit = Math.min(max, this.sendWindow);
      const left = head.chunk.length - head.offset;
      if (left >= limit || limit < POOLED_FRAME_MIN) {
        const n =
          this.outbox.length === 1 && left <= Math.min(stretch, this.sendWindow)
            ? left
            : Math.min(limit, left);
        const payload = head.chunk.subarray(head.offset, head.offset + n);
        // Small frames come cheaply from Node's shared slab; a 64 KiB pool buffer would be wasted on them.
        const frame =
          n >= POOLED_FRAME_MIN ? pooledDataFrame(0, this.id, payload) : encodeData(0, this.id, payload);
        this.advance(head, n);
        return this.finishWith(frame);
      }
      return this.finishWith(this.gatherFrame(limit, Math.max(limit, Math.min(stretch, this.sendWindow))));
    }
    const finalDone = this.finalDone;
    if (finalDone === undefined) return undefined;
    this.finalDone = undefined;
    this.localFin = true;
    const frame = encodeData(Flag.FIN, this.id, undefined);
    finalDone();
    return frame;
  }

  /**
   * The FIN rides on the last Data frame when the writer ended before it was
   * taken (end() after the last write: finishing that write calls _final at
   * once): a small response's end costs no frame of its own.
   */
  private finishWith(frame: Buffer): Buffer {
    const finalDone = this.finalDone;
    if (finalDone === undefined || this.outbox.length > 0) return frame;
    this.finalDone = undefined;
    this.localFin = true;
    frame.writeUInt16BE(Flag.FIN, 2);
    finalDone();
    return frame;
  }

  /**
   * A frame of up to `limit` bytes from as many queued chunks as there are
   * (`stretch` to finish the last one): a writer of small chunks (an http
   * response relaying 16 KiB TLS reads) costs one message per frame, not one
   * per chunk. Finishing a chunk hands the Writable's next buffered one to
   * _write at once, so the frame keeps filling; it never waits for more.
   */
  private gatherFrame(limit: number, stretch: number): Buffer {
    const frame = pooledFrame(stretch);
    let filled = 0;
    for (let head = this.outbox[0]; head !== undefined && filled < limit; head = this.outbox[0]) {
      const left = head.chunk.length - head.offset;
      const room = (this.outbox.length === 1 && filled + left <= stretch ? stretch : limit) - filled;
      const n = Math.min(room, left);
      frame.set(head.chunk.subarray(head.offset, head.offset + n), HEADER_SIZE + filled);
      filled += n;
      this.advance(head, n);
    }
    if (filled < POOLED_FRAME_MIN) {
      const small = encodeData(0, this.id, frame.subarray(HEADER_SIZE, HEADER_SIZE + filled));
      releaseFrame(frame);
      return small;
    }
    writeHeader(frame, 0, FrameType.DATA, 0, this.id, filled);
    return frame.subarray(0, HEADER_SIZE + filled);
  }

  /** `n` bytes of `head` (the first queued chunk) are framed; a finished chunk is done. */
  private advance(head: Outgoing, n: number): void {
    head.offset += n;
    this.sendWindow -= n;
    if (head.offset === head.chunk.length) {
      this.outbox.shift();
      head.done();
    }
  }

  private deliver(chunk: Buffer): void {
    const host = this.host;
    if (host !== undefined) {
      const delta = this.recvWindow.consume(chunk.length);
      if (delta > 0) host.sendWindowUpdate(this, delta);
    } else {
      this.recvWindow.buffered -= chunk.length;
    }
    if (!this.push(chunk)) this.wantsData = false;
  }

  private drainInbox(): void {
    while (this.wantsData && this.inbox.length > 0) this.deliver(this.inbox.shift()!);
    if (this.endAfterInbox && this.inbox.length === 0) {
      this.endAfterInbox = false;
      this.push(null);
    }
  }

  private touch(): void {
    this.idleTimer?.refresh();
  }
}
