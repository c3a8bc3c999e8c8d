/**
 * A session multiplexes streams over one message transport (a WebSocket in
 * practice). It owns the stream table, decides what goes on the wire next,
 * keeps the peer honest and keeps the link alive.
 *
 * Outbound order: control frames (SYN, ACK, window updates, resets, pings)
 * always go before data, so credit and resets are never stuck behind bulk
 * transfers in our own queue; data frames are taken round-robin across streams.
 * Everything stops while the transport holds `transportHighWaterMark` bytes,
 * and data also while the path estimator's in-flight cap is reached.
 *
 * Small frames one pump pass produces leave together, as one message (the
 * wire allows several whole frames per message): a GET's open, head and end
 * cost one WebSocket message and one socket write, not three. The pass runs
 * in the tick that queued the first frame, so batching delays nothing; a
 * large Data frame (pooled, see frame-pool.ts) is never copied into a batch,
 * it goes as its own message after what was batched before it.
 */

import { EventEmitter } from "node:events";
import { GoAwayCode, goAwayCodeName, ResetCode } from "./codes.js";
import { ErrorCode, type TetherError, tetherError } from "./errors.js";
import {
  encodeControl,
  encodeData,
  Flag,
  type Frame,
  FrameType,
  HEADER_SIZE,
  INITIAL_WINDOW,
  MAX_MESSAGE_SIZE,
  MAX_WINDOW,
  parseFrames,
  payloadBytes,
} from "./frame.js";
import { isPooled, POOLED_FRAME_MIN, pooledMessage, releaseFrame } from "./frame-pool.js";
import { LivenessProbe } from "./liveness-probe.js";
import { decodeOpenHeader, encodeOpenHeader, MAX_OPEN_HEADER, type Metadata } from "./open-header.js";
import { type ResolvedOptions, resolveOptions, type SessionOptions } from "./options.js";
import { type PathEstimate, sanitizePathEstimate } from "./path-estimate.js";
import { INITIAL_CAP, PathEstimator } from "./path-estimator.js";
import { Pings } from "./pings.js";
import { RoundRobin } from "./scheduler.js";
import { type StreamHost, TunnelStream } from "./stream.js";
import { WindowBudget } from "./window-budget.js";

/** Where frames go. `websocket.ts` adapts a ws WebSocket; tests use in-memory pairs. */
export interface Transport {
  /**
   * Sends one message; `done` runs once it has left user space, or failed. The
   * session reuses the message's memory after `done`, so a transport that keeps
   * the bytes longer (an in-memory link) must copy them.
   */
  send(message: Buffer, done: (err?: Error | null) => void): void;
  /** Closes the transport. Graceful lets what was sent reach the peer first. */
  close(graceful: boolean): void;
}

/** Outbound control frames allowed to pile up while the peer does not read. */
const CONTROL_QUEUE_LIMIT = 1024 * 1024;
const LARGEST_ID = 0xffffffff;
/** A client whose server pings still pings once in this many keepalive intervals (sendPing). */
const RTT_REFRESH_INTERVALS = 6;

export interface SessionEvents {
  stream: [stream: TunnelStream];
  goaway: [code: number, lastStreamId: number];
  error: [err: TetherError];
  close: [err: TetherError | undefined];
}

export class Session extends EventEmitter<SessionEvents> implements StreamHost {
  readonly role: "client" | "server";
  readonly maxWindow: number;
  /** @internal */
  readonly windowBudget: WindowBudget;
  /** @internal What pings taught about the path: the in-flight cap, the BDP, min RTT. */
  readonly path: PathEstimator;

  private readonly transport: Transport;
  private readonly options: ResolvedOptions;
  private readonly streams = new Map<number, TunnelStream>();
  private readonly scheduler = new RoundRobin<TunnelStream>();
  private control: Buffer[] = [];
  private controlBytes = 0;
  /** Small frames of the running pump pass, sent as one message when it ends (flushBatch). */
  private batch: Buffer[] = [];
  private batchBytes = 0;
  /** Streams accepted during the running receive(): their ACK is decided when it returns. */
  private accepted: TunnelStream[] = [];
  private pongValue: number | undefined;
  private inFlight = 0;
  private sentBytes = 0;
  private receivedBytes = 0;
  private pumpQueued = false;
  private pumping = false;
  /** Data frame bytes written to / received from the transport (headers included). */
  private dataWritten = 0;
  private dataReceived = 0;
  /** Streams that received data since windowRoundStart (see onPathPong). */
  private readonly roundStreams = new Set<TunnelStream>();
  private windowRoundStart = 0;

  private nextLocalId: number;
  private highestRemoteId = 0;
  private goAwaySent = false;
  private goAwayReceived = false;
  private closing = false;
  private ended = false;
  private endError: TetherError | undefined;

  private readonly pings = new Pings();
  private pingWaiters: Array<{
    value: number;
    resolve: (rtt: number) => void;
    reject: (err: Error) => void;
  }> = [];
  private lastInbound = performance.now();
  /** When the peer's latest ping arrived (sendPing: a client whose server pings skips its keepalive). */
  private peerPingAt = Number.NEGATIVE_INFINITY;
  /** When this end last pinged (keepalive, probe or delivery sample). */
  private ownPingAt = Number.NEGATIVE_INFINITY;
  private keepAliveTimer: NodeJS.Timeout | undefined;
  private deadPeerTimer: NodeJS.Timeout | undefined;
  private readonly probe: LivenessProbe;

  constructor(transport: Transport, options: SessionOptions) {
    super();
    this.options = resolveOptions(options);
    this.transport = transport;
    this.role = this.options.role;
    this.maxWindow = this.options.maxWindow;
    this.windowBudget = new WindowBudget(this.options.maxSessionWindow);
    // Sanitized here too: the option is public, and the estimate may come from the peer.
    this.path = new PathEstimator(performance.now(), sanitizePathEstimate(this.options.pathEstimate));
    this.nextLocalId = this.role === "client" ? 1 : 2;
    this.probe = this.livenessProbe();
    const { keepAliveInterval, deadPeerTimeout } = this.options;
    if (keepAliveInterval > 0) {
      this.keepAliveTimer = setInterval(() => this.sendPing(), keepAliveInterval);
      this.keepAliveTimer.unref();
      // An early sample lets receive windows start growing before the first interval.
      this.sendPing();
    }
    if (deadPeerTimeout > 0) {
      this.deadPeerTimer = setTimeout(() => this.checkLiveness(), deadPeerTimeout);
      this.deadPeerTimer.unref();
    }
  }

  /** Streams currently open in either direction. */
  get streamCount(): number {
    return this.streams.size;
  }

  /** Bytes of frames written to the transport so far (headers included). */
  get bytesSent(): number {
    return this.sentBytes;
  }

  /** Bytes of frames received from the transport so far (headers included). */
  get bytesReceived(): number {
    return this.receivedBytes;
  }

  /** Smoothed round-trip time of pings in milliseconds; undefined before the first pong. */
  get rtt(): number | undefined {
    return this.pings.smoothed;
  }

  /**
   * What the session learned about its path (delivery rate each way, min RTT),
   * for a later session over the same path to start from (the `pathEstimate`
   * option, path-memory.ts); undefined before the first pong.
   */
  get pathEstimate(): PathEstimate | undefined {
    return sanitizePathEstimate(this.path.estimate);
  }

  /** True once goAway() was called or the peer sent a go-away: open() will fail. */
  get goingAway(): boolean {
    return this.goAwaySent || this.goAwayReceived;
  }

  /** True once the session has ended; it emitted 'close'. */
  get closed(): boolean {
    return this.ended;
  }

  /** @internal Data bytes written and not yet proven delivered by a pong (what the cap bounds). */
  get inFlightData(): number {
    return this.dataWritten - this.path.delivered;
  }

  /** @internal StreamHost: a new stream's receive window, from the path's estimate of what arrives per min RTT. */
  get initialWindow(): number {
    // Twice the estimate, what a window that limited its round would grow to (ReceiveWindow clamps it).
    // Before anything arrived, what the peer's in-flight cap lets it send before its first pong:
    // a first stream whose window is smaller than that spends its first round trips on credit.
    if (this.path.receiveRate === 0) return INITIAL_CAP;
    return Math.floor(2 * this.path.receiveBdp);
  }

  /**
   * Opens a stream to `service` on the peer. Data may be written at once. If
   * the session cannot take the stream (going away, closed, at its stream
   * limit) the stream is returned already failing: it emits 'error' on the
   * next tick, as a socket that could not connect would. Invalid service names
   * or metadata throw ERR_TETHER_INVALID_ARGUMENT.
   */
  open(service: string, metadata: Metadata = {}): TunnelStream {
    const header = encodeOpenHeader(service, metadata);
    const failure = this.openFailure();
    const id = failure === undefined ? this.nextLocalId : 0;
    const stream = new TunnelStream(this, id, service, { ...metadata }, "local");
    if (failure !== undefined) {
      stream.detach();
      process.nextTick(() => stream.destroy(failure));
      return stream;
    }
    this.nextLocalId += 2;
    this.streams.set(id, stream);
    this.queueControl(encodeData(Flag.SYN, id, header));
    this.probe.expectAnswer();
    // A session that knows its path grants new streams its BDP at once instead of ramping up again.
    const extra = stream.recvWindow.size - INITIAL_WINDOW;
    if (extra > 0) this.queueControl(encodeControl(FrameType.WINDOW_UPDATE, 0, id, extra));
    return stream;
  }

  /**
   * Starts an orderly shutdown: the peer is told which of its streams were
   * taken (go-away carries the last accepted id), no new streams are opened or
   * accepted, and the session closes when the last open stream ends.
   */
  goAway(): void {
    if (this.ended || this.goAwaySent) return;
    this.goAwaySent = true;
    this.queueControl(encodeControl(FrameType.GO_AWAY, 0, this.highestRemoteId, GoAwayCode.NORMAL));
    this.closeIfIdle();
  }

  /**
   * Closes now. Open streams are destroyed without an error (check
   * `readableEnded` to tell a finished stream from an aborted one); the peer
   * sees its streams fail with ERR_TETHER_TRANSPORT_CLOSED.
   */
  close(): void {
    if (this.ended) return;
    this.end(undefined, GoAwayCode.NORMAL, true);
  }

  /** Fails the session with `err` (emitted as 'error' if anyone listens). */
  destroy(err?: Error): void {
    if (this.ended) return;
    const cause = err === undefined ? undefined : toTetherError(err);
    this.end(cause, GoAwayCode.INTERNAL_ERROR, true);
  }

  /** Measures one round trip with a ping. Rejects if the session ends first. */
  ping(): Promise<number> {
    if (this.ended) {
      return Promise.reject(this.endError ?? tetherError(ErrorCode.SESSION_CLOSED, "session closed"));
    }
    return new Promise((resolve, reject) => {
      this.pingWaiters.push({ value: this.queuePing(), resolve, reject });
    });
  }

  /**
   * The frame input: hand every message received from the transport here,
   * as one buffer or as the list of parts it arrived in (no need to join
   * them). Malformed input closes the session with a protocol-error go-away;
   * it never throws.
   */
  receive(message: Buffer | readonly Buffer[]): void {
    if (this.ended) return;
    this.lastInbound = performance.now();
    if (Buffer.isBuffer(message)) this.receivedBytes += message.length;
    else for (let i = 0; i < message.length; i++) this.receivedBytes += message[i]!.length;
    const problem = parseFrames(message, this.handleFrame);
    if (problem !== undefined && !this.ended) this.protocolError(problem);
    if (this.accepted.length > 0) this.settleAcks();
    this.probePath();
  }

  /** Tell the session its transport is gone (closed by the peer or failed). */
  transportClosed(err?: Error): void {
    if (this.ended) return;
    if (err === undefined && this.goingAway && this.streams.size === 0) {
      this.end(undefined, undefined, false);
      return;
    }
    const reason = tetherError(
      ErrorCode.TRANSPORT_CLOSED,
      err === undefined ? "transport closed" : `transport failed: ${err.message}`,
      { cause: err },
    );
    this.end(reason, undefined, false);
  }

  // ---- StreamHost ----

  /** @internal */
  schedule(stream: TunnelStream): void {
    if (this.ended || !this.streams.has(stream.id)) return;
    this.scheduler.add(stream);
    // Data to send (or a FIN): the peer will answer it (credit, a response), or is probed.
    this.probe.expectAnswer();
    this.requestPump();
  }

  /** @internal */
  sendWindowUpdate(stream: TunnelStream, delta: number): void {
    this.queueControl(encodeControl(FrameType.WINDOW_UPDATE, 0, stream.id, delta));
  }

  /** @internal */
  sendReset(stream: TunnelStream, code: number): void {
    // An accepted stream is acknowledged before it is reset: the code means what it says, not "never taken".
    if (stream.ackPending) this.queueControl(this.takeAck(stream));
    this.queueControl(encodeControl(FrameType.WINDOW_UPDATE, Flag.RST, stream.id, code));
  }

  /** @internal */
  streamDestroyed(stream: TunnelStream): void {
    this.forget(stream);
  }

  // ---- inbound ----

  private readonly handleFrame = (frame: Frame): boolean => {
    switch (frame.type) {
      case FrameType.PING:
        this.onPing(frame);
        break;
      case FrameType.GO_AWAY:
        this.onGoAway(frame.length, frame.streamId);
        break;
      default:
        if ((frame.flags & Flag.SYN) !== 0) this.onOpen(frame);
        else this.onStreamFrame(frame);
    }
    return !this.ended;
  };

  private onPing(frame: Frame): void {
    if (frame.flags === Flag.SYN) {
      this.peerPingAt = performance.now();
      // Only the latest ping needs an answer; a ping flood cannot grow the queue.
      if (this.pongValue === undefined) this.requestPump();
      this.pongValue = frame.length;
      return;
    }
    this.onPathPong(frame.length);
    this.onPong(frame.length);
  }

  /** A pong answers the ping it names and every earlier one (peers answer only the latest they read). */
  private onPong(value: number): void {
    const sample = this.pings.answer(value, performance.now());
    if (sample === undefined || this.pingWaiters.length === 0) return;
    const waiters = this.pingWaiters;
    this.pingWaiters = [];
    for (const w of waiters) {
      if (this.pings.pending(w.value)) this.pingWaiters.push(w);
      else w.resolve(sample);
    }
  }

  private onGoAway(code: number, lastStreamId: number): void {
    if (code !== GoAwayCode.NORMAL) {
      this.end(
        tetherError(ErrorCode.PEER_GOAWAY, `peer went away: ${goAwayCodeName(code)}`, { goAwayCode: code }),
        undefined,
        false,
      );
      return;
    }
    if (this.goAwayReceived) return;
    this.goAwayReceived = true;
    this.emit("goaway", code, lastStreamId);
    // Our opens the peer never took will be refused; fail them now so callers can retry elsewhere.
    for (const stream of [...this.streams.values()]) {
      if (stream.initiator === "local" && stream.id > lastStreamId && !stream.acked) {
        stream.terminate(
          tetherError(ErrorCode.GOING_AWAY, `stream ${stream.id} not accepted: peer going away`),
        );
        this.forget(stream);
      }
    }
    this.closeIfIdle();
  }

  private onOpen(frame: Frame): void {
    const id = frame.streamId;
    if (!this.isRemoteId(id)) {
      this.protocolError(`peer opened stream ${id} with our parity`);
      return;
    }
    if (id <= this.highestRemoteId) {
      this.protocolError(`peer reopened or reused stream id ${id}`);
      return;
    }
    if (frame.length > MAX_OPEN_HEADER) {
      this.protocolError(`open header of ${frame.length} bytes`);
      return;
    }
    this.highestRemoteId = id;
    const refuse = (code: number) => {
      this.queueControl(encodeControl(FrameType.WINDOW_UPDATE, Flag.RST, id, code));
    };
    const header = decodeOpenHeader(payloadBytes(frame));
    if (typeof header === "string") {
      refuse(ResetCode.PROTOCOL_ERROR);
      return;
    }
    if (this.goingAway) {
      refuse(ResetCode.GOING_AWAY);
      return;
    }
    if (this.streams.size >= this.options.maxStreams) {
      refuse(ResetCode.STREAM_LIMIT);
      return;
    }
    const decision = this.decide({ id, service: header.service, metadata: header.metadata });
    if (decision !== 0) {
      refuse(decision);
      return;
    }
    const stream = new TunnelStream(this, id, header.service, header.metadata, "remote");
    this.streams.set(id, stream);
    // The ACK waits for the end of this receive(), which may bring the opener's FIN (settleAcks).
    stream.ackPending = true;
    this.accepted.push(stream);
    if ((frame.flags & Flag.FIN) !== 0) stream.onRemoteFin();
    this.emit("stream", stream);
  }

  /**
   * The ACKs of the streams this receive() accepted. A stream whose opener is
   * still writing gets its ACK (and the credit in it) at once. One whose
   * opener already sent FIN (a GET: open, head and end in one message) needs
   * neither now: its ACK goes with the stream's first frame, its answer, in
   * the same message instead of one of its own. Whether the stream was taken
   * never depends on the ACK: a go-away names the last stream id accepted.
   */
  private settleAcks(): void {
    const accepted = this.accepted;
    this.accepted = [];
    for (const stream of accepted) {
      if (stream.ackPending && !stream.remoteFin && this.streams.get(stream.id) === stream) {
        this.queueControl(this.takeAck(stream));
      }
    }
  }

  private takeAck(stream: TunnelStream): Buffer {
    stream.ackPending = false;
    return encodeControl(
      FrameType.WINDOW_UPDATE,
      Flag.ACK,
      stream.id,
      stream.recvWindow.size - INITIAL_WINDOW,
    );
  }

  /** 0 to accept, otherwise the reset code to refuse with. */
  private decide(request: { id: number; service: string; metadata: Metadata }): number {
    const hook = this.options.accept;
    if (hook === undefined) return this.listenerCount("stream") > 0 ? 0 : ResetCode.REFUSED;
    let decision: unknown;
    try {
      decision = hook(request);
    } catch {
      return ResetCode.INTERNAL_ERROR;
    }
    if (decision === true || decision === undefined) return 0;
    if (
      typeof decision === "number" &&
      Number.isInteger(decision) &&
      decision > 0 &&
      decision <= LARGEST_ID
    ) {
      return decision;
    }
    return ResetCode.REFUSED;
  }

  private onStreamFrame(frame: Frame): void {
    const id = frame.streamId;
    const stream = this.streams.get(id);
    if (stream === undefined) {
      const neverOpened = this.isRemoteId(id) ? id > this.highestRemoteId : id >= this.nextLocalId;
      if (neverOpened) this.protocolError(`frame for stream ${id}, which was never opened`);
      // Otherwise the stream is closed here and this frame crossed our reset or FIN on the wire.
      return;
    }
    if (frame.type === FrameType.DATA) {
      if (stream.remoteFin) {
        this.protocolError(`data on stream ${id} after FIN`);
        return;
      }
      if (!stream.recvWindow.receive(frame.length)) {
        this.protocolError(`stream ${id} overran its window by ${frame.length - stream.recvWindow.credit}`);
        return;
      }
      this.dataReceived += HEADER_SIZE + frame.length;
      if (this.roundStreams.size === 0) this.startWindowRound();
      this.roundStreams.add(stream);
      if (frame.payload !== undefined) {
        if (frame.length > 0) stream.onData(frame.payload);
      } else {
        const pieces = frame.pieces!;
        for (let i = 0; i < pieces.length; i++) stream.onData(pieces[i]!);
      }
      if ((frame.flags & Flag.FIN) !== 0) {
        stream.onRemoteFin();
        if (stream.finished) this.retire(stream);
      }
      return;
    }
    if (frame.flags === Flag.RST) {
      this.forget(stream);
      stream.onRemoteReset(frame.length);
      return;
    }
    if (frame.flags === Flag.ACK) {
      if (stream.acked) {
        this.protocolError(`unexpected ACK for stream ${id}`);
        return;
      }
      stream.acked = true;
    }
    if (stream.sendWindow + frame.length > MAX_WINDOW) {
      this.protocolError(`window of stream ${id} grew past ${MAX_WINDOW}`);
      return;
    }
    stream.sendWindow += frame.length;
    if (frame.length > 0 && stream.sendable) this.schedule(stream);
  }

  private isRemoteId(id: number): boolean {
    return (id % 2 === 1) === (this.role === "server");
  }

  // ---- outbound ----

  private queueControl(frame: Buffer): void {
    if (this.ended) return;
    this.control.push(frame);
    this.controlBytes += frame.length;
    if (this.controlBytes > CONTROL_QUEUE_LIMIT) {
      this.end(
        tetherError(ErrorCode.CONTROL_OVERFLOW, "peer is not reading: control frames piled up"),
        GoAwayCode.INTERNAL_ERROR,
        false,
      );
      return;
    }
    this.requestPump();
  }

  private requestPump(): void {
    if (this.pumpQueued || this.pumping) return;
    this.pumpQueued = true;
    process.nextTick(this.pump);
  }

  private readonly pump = (): void => {
    this.pumpQueued = false;
    if (this.ended || this.pumping) return;
    this.pumping = true;
    try {
      const limit = this.options.transportHighWaterMark;
      const preferred = this.options.preferredFrameSize;
      const frameSize = this.path.frameSize(preferred);
      // Past the preferred size only to finish a chunk, and not where the path wants smaller frames.
      const stretch = frameSize === preferred ? this.options.maxFrameSize : frameSize;
      // A carried rate whose probe is late is dropped before it lets more out.
      this.path.overdue(performance.now());
      while (this.inFlight + this.batchBytes < limit && !this.ended) {
        if (this.control.length > 0 || this.pongValue !== undefined) {
          this.takeControl();
          continue;
        }
        // Control frames are never held; data waits in its stream's outbox until pongs prove
        // delivery, except that a small write may pass a bulk stream a little beyond the cap.
        // From idle, a ping goes ahead of the first burst: its RTT is the empty path's.
        const first = this.scheduler.peek();
        if (first !== undefined && !first.smallSend && this.path.idle(this.dataWritten)) {
          this.queuePing();
          continue;
        }
        const stream = this.path.allows(this.dataWritten)
          ? this.scheduler.next()
          : this.path.allowsSmall(this.dataWritten)
            ? this.scheduler.takeFirst(isSmallSend, 16)
            : undefined;
        if (stream === undefined) {
          if (this.scheduler.size > 0) this.path.noteCapBlocked();
          break;
        }
        const frame = stream.takeFrame(frameSize, stretch);
        if (stream.sendable) this.scheduler.add(stream);
        if (frame !== undefined) {
          if (stream.ackPending) this.batchFrame(this.takeAck(stream));
          this.writeData(frame);
          this.probePath();
        }
        if (stream.finished) this.retire(stream);
      }
      if (!this.ended) this.flushBatch();
    } finally {
      this.pumping = false;
    }
    if (this.ended) return;
    this.probePath();
    if (this.closing && this.control.length === 0 && this.pongValue === undefined) {
      this.end(undefined, undefined, true);
    } else if (this.inFlight < this.options.transportHighWaterMark && this.control.length > 0) {
      this.requestPump();
    }
  };

  /** Moves queued control frames (the pong first) into the pass's batch, a message's worth at most. */
  private takeControl(): void {
    for (const frame of this.takeControlFrames()) this.batchFrame(frame);
  }

  /** Packs queued control frames into one message, up to the message size limit. */
  private takeControlBatch(): Buffer {
    const parts = this.takeControlFrames();
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  /** Takes the pong and the queued control frames, in order, a message's worth at most. */
  private takeControlFrames(): Buffer[] {
    const parts: Buffer[] = [];
    let size = 0;
    if (this.pongValue !== undefined) {
      parts.push(encodeControl(FrameType.PING, Flag.ACK, 0, this.pongValue));
      size += HEADER_SIZE;
      this.pongValue = undefined;
    }
    let taken = 0;
    let takenBytes = 0;
    while (taken < this.control.length) {
      const next = this.control[taken]!;
      if (size + next.length > MAX_MESSAGE_SIZE) break;
      parts.push(next);
      size += next.length;
      takenBytes += next.length;
      taken++;
    }
    this.control = taken === this.control.length ? [] : this.control.slice(taken);
    this.controlBytes -= takenBytes;
    return parts;
  }

  /**
   * Adds a frame to the pass's batch. A pooled frame (a large Data frame)
   * is not copied: what was batched before it leaves first, then the frame
   * as its own message.
   */
  private batchFrame(frame: Buffer): void {
    if (isPooled(frame)) {
      this.flushBatch();
      this.write(frame);
      return;
    }
    if (this.batchBytes + frame.length > MAX_MESSAGE_SIZE) this.flushBatch();
    this.batch.push(frame);
    this.batchBytes += frame.length;
  }

  /** Sends the batch as one message: alone as it is, joined in a pooled buffer that the transport frames in place. */
  private flushBatch(): void {
    const parts = this.batch;
    if (parts.length === 0) return;
    const size = this.batchBytes;
    this.batch = [];
    this.batchBytes = 0;
    if (parts.length === 1) {
      this.write(parts[0]!);
      return;
    }
    // A pool buffer is 66 KiB whatever it holds: small batches (a pong and an update, an ACK and a short
    // reply) are joined in a buffer of their own size, as small Data frames are (stream.ts).
    if (size < POOLED_FRAME_MIN) {
      this.write(Buffer.concat(parts, size));
      return;
    }
    const message = pooledMessage(size);
    let offset = 0;
    for (const part of parts) {
      message.set(part, offset);
      offset += part.length;
    }
    this.write(message);
  }

  private write(message: Buffer): void {
    this.inFlight += message.length;
    this.sentBytes += message.length;
    this.transport.send(message, this.onSent.bind(this, message));
  }

  private onSent(message: Buffer, err?: Error | null): void {
    this.inFlight -= message.length;
    releaseFrame(message);
    if (err) {
      this.transportClosed(err);
      return;
    }
    if (!this.ended && this.inFlight < this.options.transportHighWaterMark) this.requestPump();
  }

  private sendPing(): void {
    if (this.ended) return;
    const now = performance.now();
    // One keepalive ping in flight at a time; a reply that never comes is the dead-peer timer's business.
    const sentAt = this.pings.newestSentAt;
    if (sentAt !== undefined && now - sentAt < this.options.deadPeerTimeout) return;
    // The client (the agent) leaves keepalive to a server that pings: the server's pings prove it alive
    // and our pongs prove us alive to it, so a second exchange every interval would only double what an
    // idle fleet costs the server. Both ends start their intervals at about the same moment, so a server
    // ping arrives about one interval before our tick: half an interval of slack keeps timer jitter from
    // counting it missed. Ours resume within two intervals if the server's stop, and one goes every
    // RTT_REFRESH_INTERVALS anyway so this end's round-trip figure stays recent.
    const interval = this.options.keepAliveInterval;
    if (
      this.role === "client" &&
      now - this.peerPingAt < 1.5 * interval &&
      now - this.ownPingAt < RTT_REFRESH_INTERVALS * interval
    ) {
      return;
    }
    this.queuePing();
  }

  /** Sends a ping at once; returns its value. Keepalives, probes and ping() all go through here. */
  private queuePing(): number {
    const now = performance.now();
    const value = this.pings.next(now);
    this.ownPingAt = now;
    // The path estimator records each ping: a pong for one answers all earlier ones (the peer answers only the latest it saw).
    this.path.pingSent(value, this.dataWritten, this.dataReceived, now);
    this.queueControl(encodeControl(FrameType.PING, Flag.SYN, 0, value));
    return value;
  }

  private livenessProbe(): LivenessProbe {
    const host = {
      lastInbound: () => this.lastInbound,
      rtt: () => ({ smoothed: this.pings.smoothed, largestRecent: this.pings.largestRecent }),
      ping: () => this.queuePing(),
      dead: (message: string) =>
        this.end(tetherError(ErrorCode.KEEPALIVE_TIMEOUT, message), GoAwayCode.KEEPALIVE_TIMEOUT, false),
    };
    return new LivenessProbe(host, this.options.probeDelay, this.options.probeTimeout);
  }

  // ---- path estimation (path-estimator.ts holds the policy) ----

  /** A delivery probe when the estimator wants one (path-estimator.ts: probeDue). */
  private probePath(): void {
    if (this.ended || this.closing) return;
    if (this.path.probeDue(this.dataWritten, this.dataReceived)) this.queuePing();
  }

  private onPathPong(value: number): void {
    const now = performance.now();
    const round = this.path.pongReceived(value, this.dataReceived, now);
    if (round === undefined) return;
    // Windows judge about one min RTT of reading at a time (never extrapolated from a
    // shorter burst, see endRound), back to back while data flows.
    const elapsed = now - this.windowRoundStart;
    if (this.roundStreams.size > 0 && elapsed >= 0.9 * round.minRtt) {
      this.windowRoundStart = now;
      for (const stream of this.roundStreams) {
        if (stream.destroyed || this.streams.get(stream.id) !== stream) continue;
        const growth = stream.recvWindow.endRound(elapsed, round.minRtt, round.startup);
        if (growth > 0) this.sendWindowUpdate(stream, growth);
      }
      this.roundStreams.clear();
    }
    // The cap may have opened, and the next probe goes out after what that lets through.
    if (this.scheduler.size > 0) this.requestPump();
    else this.probePath();
  }

  /** The first data since the last window verdict: after an idle spell a new round starts now. */
  private startWindowRound(): void {
    const now = performance.now();
    if (now - this.windowRoundStart > this.path.effectiveMinRtt) this.windowRoundStart = now;
  }

  private writeData(frame: Buffer): void {
    if (this.dataWritten === this.path.delivered) this.path.noteIdleWrite(performance.now());
    this.dataWritten += frame.length;
    this.batchFrame(frame);
  }

  private checkLiveness(): void {
    if (this.ended) return;
    const timeout = this.options.deadPeerTimeout;
    const idle = performance.now() - this.lastInbound;
    if (idle >= timeout) {
      this.end(
        tetherError(ErrorCode.KEEPALIVE_TIMEOUT, `nothing heard from peer for ${Math.round(idle)} ms`),
        GoAwayCode.KEEPALIVE_TIMEOUT,
        false,
      );
      return;
    }
    this.deadPeerTimer = setTimeout(() => this.checkLiveness(), timeout - idle);
    this.deadPeerTimer.unref();
  }

  // ---- lifecycle ----

  private openFailure(): TetherError | undefined {
    if (this.ended) return this.endError ?? tetherError(ErrorCode.SESSION_CLOSED, "session closed");
    if (this.goingAway) return tetherError(ErrorCode.GOING_AWAY, "session is going away");
    if (this.streams.size >= this.options.maxStreams) {
      return tetherError(ErrorCode.STREAM_LIMIT, `session already has ${this.options.maxStreams} streams`);
    }
    if (this.nextLocalId > LARGEST_ID) return tetherError(ErrorCode.GOING_AWAY, "stream ids exhausted");
    return undefined;
  }

  /** A stream both sides finished: drop it from the table, keep it readable for the app. */
  private retire(stream: TunnelStream): void {
    stream.detach();
    this.forget(stream);
  }

  private forget(stream: TunnelStream): void {
    if (this.streams.get(stream.id) !== stream) return;
    this.streams.delete(stream.id);
    this.scheduler.delete(stream);
    this.closeIfIdle();
  }

  private closeIfIdle(): void {
    if (this.ended || this.closing || !this.goingAway || this.streams.size > 0) return;
    // Flush what is queued (the last FINs, the go-away) before closing the transport.
    this.closing = true;
    this.requestPump();
  }

  /** @internal Closes the session with a protocol-error go-away. */
  protocolError(reason: string): void {
    this.end(tetherError(ErrorCode.PROTOCOL, `protocol error: ${reason}`), GoAwayCode.PROTOCOL_ERROR, true);
  }

  /**
   * Ends the session once. `goAwayCode` says what to tell the peer (undefined:
   * nothing, it already knows or cannot hear); `graceful` lets the transport
   * deliver what was already sent.
   */
  private end(err: TetherError | undefined, goAwayCode: number | undefined, graceful: boolean): void {
    if (this.ended) return;
    this.ended = true;
    this.endError = err;
    if (this.keepAliveTimer !== undefined) clearInterval(this.keepAliveTimer);
    if (this.deadPeerTimer !== undefined) clearTimeout(this.deadPeerTimer);
    this.probe.stop();
    // What the pass already counted as written goes first, or nowhere if the end is abrupt.
    // (The batch never holds a pooled frame: batchFrame sends those on their own.)
    if (graceful) this.flushBatch();
    this.batch = [];
    this.batchBytes = 0;
    if (goAwayCode !== undefined && !(this.goAwaySent && goAwayCode === GoAwayCode.NORMAL)) {
      // Bypasses the queue: the peer should learn why even if our queue is backed up.
      this.transport.send(encodeControl(FrameType.GO_AWAY, 0, this.highestRemoteId, goAwayCode), noop);
    }
    this.goAwaySent = true;
    // A graceful end still delivers what is queued: a go-away sent just before close(), the last FINs.
    if (graceful) while (this.control.length > 0) this.transport.send(this.takeControlBatch(), noop);
    this.control = [];
    this.controlBytes = 0;
    this.scheduler.clear();
    const streams = [...this.streams.values()];
    this.streams.clear();
    // Like http2: a local close() aborts streams quietly, a failure errors them.
    for (const stream of streams) stream.terminate(err);
    const waiters = this.pingWaiters;
    this.pingWaiters = [];
    const pingError = err ?? tetherError(ErrorCode.SESSION_CLOSED, "session closed");
    for (const w of waiters) w.reject(pingError);
    this.transport.close(graceful);
    if (err !== undefined && this.listenerCount("error") > 0) this.emit("error", err);
    this.emit("close", err);
  }
}

function noop(): void {}

function isSmallSend(stream: TunnelStream): boolean {
  return stream.smallSend;
}

function toTetherError(err: Error): TetherError {
  if (typeof (err as TetherError).code === "string" && (err as TetherError).code.startsWith("ERR_TETHER_")) {
    return err as TetherError;
  }
  return tetherError(ErrorCode.SESSION_CLOSED, `session destroyed: ${err.message}`, { cause: err });
}
