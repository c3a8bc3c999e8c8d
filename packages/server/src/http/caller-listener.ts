// The one TLS port of tether-server: HTTP/2 or HTTP/1.1 by ALPN. client-go
// and kubectl multiplex their requests and watches over one h2 connection as
// they do with a real apiserver; upgrades (SPDY and WebSocket exec, attach,
// port-forward, and the agents' tunnels) stay on HTTP/1.1, which clients ask
// for by ALPN when they mean to upgrade. Every bound of limits.ts holds for an
// h2 connection too: Node applies the HTTP/1.1 ones, this file the h2 ones.
import type { IncomingMessage, ServerResponse } from "node:http";
import {
  constants,
  createSecureServer,
  type Http2SecureServer,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type ServerHttp2Session,
} from "node:http2";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { sendStatus } from "@tether/common";
import { CallerQuota, releaseOnClose } from "../proxy/caller-quota.js";
import type { Logger } from "../logger.js";
import { sourceKey } from "./failure-rate-limit.js";
import type { Limits } from "./limits.js";

/**
 * The HTTP/2 settings and session bounds (docs/operations.md "HTTP/2" lists
 * them with the reasons); maxConcurrentStreams is --http2-max-streams-per-connection.
 */
export const HTTP2_BOUNDS = Object.freeze({
  // The RFC's default window: what a caller may send on one stream before the server reads it,
  // so the unread request bodies of one connection are at most this times its streams.
  initialWindowSize: 65_535,
  // As Node's HTTP/1.1 maxHeaderSize: a request head is bounded the same on either protocol.
  maxHeaderListSize: 16_384,
  // MB of nghttp2's own buffers (header tables, queued frames) per connection; beyond it new streams are refused.
  maxSessionMemory: 10,
  // Rapid reset (CVE-2023-44487): a burst of this many RST_STREAMs from a caller, then this many per second,
  // before the connection is closed with ENHANCE_YOUR_CALM.
  streamResetBurst: 100,
  streamResetRate: 33,
  // Frames that break the protocol, and streams opened over the limit, before the connection is closed.
  maxSessionInvalidFrames: 100,
  maxSessionRejectedStreams: 100,
});

export interface CallerListenerOptions {
  cert: string;
  key: string;
  ca: string;
  limits: Limits;
  log: Logger;
  /** Either protocol's plain requests; the h2 compat objects are used through the subset both share. */
  request(req: IncomingMessage, res: ServerResponse): void;
  /** HTTP/1.1 upgrades (h2 has none: WebSocket over h2, RFC 8441, is not offered). */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
}

export class CallerListener {
  readonly server: Http2SecureServer;
  private readonly sockets = new Set<Socket>();
  private readonly sessions = new Set<ServerHttp2Session>();

  constructor(private readonly options: CallerListenerOptions) {
    const limits = options.limits;
    const http1 = {
      // Bounds receiving a request (head and body), not the response: watches and logs -f run
      // for as long as the caller wants. The headers timeout bounds slowloris heads, checked this often.
      requestTimeout: limits.requestTimeoutMs,
      headersTimeout: limits.headersTimeoutMs,
      connectionsCheckingInterval: Math.min(30_000, Math.max(100, limits.headersTimeoutMs / 10)),
      keepAliveTimeout: limits.idleTimeoutMs,
    };
    this.server = createSecureServer(
      {
        cert: options.cert,
        key: options.key,
        ca: options.ca,
        // Agents must present a certificate; host callers may use a token instead.
        requestCert: true,
        rejectUnauthorized: false,
        handshakeTimeout: limits.tlsHandshakeTimeoutMs,
        // tls.Server leaves Nagle on (http.Server does not): a response's head, flushed on its own,
        // then held its body back until the caller's delayed ACK, 40 ms per small HTTP/1.1 GET.
        noDelay: true,
        allowHTTP1: true,
        ...http1,
        http1Options: http1,
        settings: {
          maxConcurrentStreams: limits.http2MaxStreamsPerConnection,
          initialWindowSize: HTTP2_BOUNDS.initialWindowSize,
          maxHeaderListSize: HTTP2_BOUNDS.maxHeaderListSize,
          enablePush: false,
        },
        maxSessionMemory: HTTP2_BOUNDS.maxSessionMemory,
        streamResetBurst: HTTP2_BOUNDS.streamResetBurst,
        streamResetRate: HTTP2_BOUNDS.streamResetRate,
        maxSessionInvalidFrames: HTTP2_BOUNDS.maxSessionInvalidFrames,
        maxSessionRejectedStreams: HTTP2_BOUNDS.maxSessionRejectedStreams,
        unknownProtocolTimeout: limits.tlsHandshakeTimeoutMs,
      },
      (req, res) => this.onRequest(req, res),
    );
    // An HTTP/1.1 connection that never sends a request; the request handler lifts it while one is in flight.
    // h2 sessions are bounded by streams, not by bytes (boundSession).
    this.server.setTimeout(limits.idleTimeoutMs);
    this.server.maxConnections = limits.maxConnections;
    const perSource = new CallerQuota(limits.maxConnectionsPerSource);
    this.server.on("connection", (socket: Socket) => {
      const release = perSource.acquire("connections", sourceKey(socket.remoteAddress));
      if (!release) {
        socket.destroy();
        return;
      }
      this.sockets.add(socket);
      releaseOnClose(socket, () => {
        this.sockets.delete(socket);
        release();
      });
    });
    let lastDropLog = 0;
    this.server.on("drop", () => {
      if (Date.now() - lastDropLog < 10_000) return;
      lastDropLog = Date.now();
      options.log.warn(
        { maxConnections: limits.maxConnections },
        "connections refused: at --max-connections",
      );
    });
    this.server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) =>
      options.upgrade(req, socket, head),
    );
    this.server.on("session", (session: ServerHttp2Session) => this.boundSession(session));
    this.server.on("tlsClientError", (err) =>
      options.log.debug({ err: err.message }, "TLS handshake failed"),
    );
  }

  /**
   * An h2 connection with no stream open for the idle timeout is closed
   * (GOAWAY), like an HTTP/1.1 one with no request in flight: a quiet watch
   * keeps its connection, an abandoned connection does not stay. A header
   * block that never ends opens no stream, so it is bounded the same way.
   */
  private boundSession(session: ServerHttp2Session): void {
    const { idleTimeoutMs, headersTimeoutMs } = this.options.limits;
    // The server-wide timeout counts bytes; a watch may send none for minutes.
    session.setTimeout(0);
    this.sessions.add(session);
    session.once("close", () => this.sessions.delete(session));
    let open = 0;
    let idle: NodeJS.Timeout | undefined;
    const arm = () => {
      idle = setTimeout(() => {
        session.close();
        // A peer that never lets the close finish is cut off.
        setTimeout(() => session.destroy(), headersTimeoutMs).unref();
      }, idleTimeoutMs);
      idle.unref();
    };
    arm();
    session.on("stream", (stream) => {
      open++;
      clearTimeout(idle);
      stream.once("close", () => {
        if (--open === 0 && !session.closed && !session.destroyed) arm();
      });
    });
    session.once("close", () => clearTimeout(idle));
    session.on("error", (err) => this.options.log.debug({ err: err.message }, "HTTP/2 session error"));
  }

  private onRequest(
    req: IncomingMessage | Http2ServerRequest,
    res: ServerResponse | Http2ServerResponse,
  ): void {
    if (req.httpVersionMajor >= 2) this.boundStream(req as Http2ServerRequest, res as Http2ServerResponse);
    // The handlers use the subset of the request and response both protocols' objects share.
    this.options.request(req as IncomingMessage, res as ServerResponse);
  }

  /**
   * What Node's HTTP/1.1 parser does for a request, done for an h2 stream: the
   * Host header is the :authority (host routing reads it), and a request not
   * received whole within the request timeout gets 408, or a reset once its
   * response has begun.
   */
  private boundStream(req: Http2ServerRequest, res: Http2ServerResponse): void {
    if (req.headers.host === undefined && req.authority) req.headers.host = req.authority;
    if (req.stream.endAfterHeaders) return;
    const timer = setTimeout(() => {
      if (res.headersSent) req.stream.close(constants.NGHTTP2_CANCEL);
      else
        sendStatus(
          res as unknown as ServerResponse,
          "RequestTimeout",
          "the request was not received whole within the server's request timeout",
        );
    }, this.options.limits.requestTimeoutMs);
    timer.unref();
    const done = () => clearTimeout(timer);
    req.once("end", done);
    res.once("close", done);
  }

  listen(port: number, host: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, host, () => {
        this.server.off("error", reject);
        resolve();
      });
    });
  }

  /**
   * GOAWAY on every h2 connection (a graceful stop): its streams run on, and
   * the client sends new requests on a new connection, through the balancer
   * to another replica. An HTTP/1.1 connection gets `Connection: close` on
   * its next response instead (lifecycle/drain.ts).
   */
  goAway(): void {
    for (const session of this.sessions) if (!session.closed && !session.destroyed) session.close();
  }

  /** Cuts every connection, h2 and HTTP/1.1, and waits for the listener to close. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }
}
