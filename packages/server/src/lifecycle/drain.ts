// A graceful stop (SIGTERM): what the server holds for callers, and the
// order it lets go of it in. First it leaves (--shutdown-delay): readiness
// goes false and agents' tunnels are refused, but callers are still served,
// each connection closed after its response, while load balancers take the
// replica out of their rotation; closing the listener at once would reset
// the connections they still send. Then it drains: new requests, upgrades
// and agents are refused (503 with Retry-After, so client-go retries, through
// a load balancer on another replica) but for the first request of a
// connection accepted before the listener closed; watches end between two events so
// informers resume from their resourceVersion; plain requests and upgrades
// in flight get until the grace period ends. TetherServer.shutdown() drives it.
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { sendStatus, statusResponseHead } from "@tether/common";
import { closeWith } from "../proxy/upgrade-relay.js";
import { isWatchRequest, WatchEnd } from "./watch-end.js";

const REFUSAL =
  "tether-server is shutting down: retry, the request goes to another replica or the restarted server";

/** serving → leaving (readiness false, callers still served) → draining (refusing). */
type Phase = "serving" | "leaving" | "draining";

export class Drain {
  private phase: Phase = "serving";
  private readonly requests = new Set<ServerResponse>();
  private readonly watches = new Set<WatchEnd>();
  private readonly upgrades = new Set<Duplex>();
  /** Connections that carried a request. */
  private readonly used = new WeakSet<object>();
  private settled: (() => void) | undefined;

  /** True from SIGTERM on (leaving, then draining): /readyz answers 503. */
  get active(): boolean {
    return this.phase !== "serving";
  }

  /** Requests and upgrades still in flight. */
  get inFlight(): number {
    return this.requests.size + this.upgrades.size;
  }

  /**
   * Counts a request until its response closes. While leaving it is served
   * with `Connection: close`: the balancer's next connection should go to a
   * replica still in its rotation. During a drain it answers 503 (closing the
   * connection) and returns false, unless it is the first on its connection:
   * that one was dialed before the listener closed, by a balancer that did
   * not know yet, and a 503 would be the caller's error.
   */
  admitRequest(req: IncomingMessage, res: ServerResponse): boolean {
    const connection = connectionOf(req);
    const first = !this.used.has(connection);
    this.used.add(connection);
    if (this.phase === "draining" && !first) {
      res.shouldKeepAlive = false;
      sendStatus(res, "ServiceUnavailable", REFUSAL, 1);
      return false;
    }
    if (this.phase !== "serving") closeAfter(req, res);
    this.track(req, res);
    return true;
  }

  /**
   * Counts a request until its response closes, refusing nothing: one
   * another replica forwarded here over the hop (its caller was admitted
   * there), which the end of this drain must not cut. A watch among them
   * ends with the others.
   */
  track(req: IncomingMessage, res: ServerResponse): void {
    this.requests.add(res);
    const watch = isWatchRequest(req) ? new WatchEnd(res) : undefined;
    if (watch) this.watches.add(watch);
    const done = () => {
      this.requests.delete(res);
      if (watch) this.watches.delete(watch);
      this.check();
    };
    // A response is finished once handed to the socket, not once written out of it: a slow
    // reader's LIST may still sit in the socket's buffer, which closing the connection would drop.
    res.once("close", () => (res.writableFinished ? flushed(res.socket, done) : done()));
  }

  /**
   * As admitRequest, for an upgrade. An agent's tunnel is refused from the
   * moment the server leaves (its agent is to dial another replica) but not
   * counted: sessions are the server's to close, not work to wait for. A
   * caller's upgrade (exec, port-forward) is still served while leaving.
   */
  admitUpgrade(socket: Duplex, counted: boolean): boolean {
    if (this.phase === "draining" || (this.phase === "leaving" && !counted)) {
      closeWith(socket, statusResponseHead("ServiceUnavailable", REFUSAL, 1));
      return false;
    }
    if (counted) this.trackUpgrade(socket);
    return true;
  }

  /** Counts an upgrade until its socket closes, refusing nothing (one forwarded by another replica). */
  trackUpgrade(socket: Duplex): void {
    this.upgrades.add(socket);
    socket.once("close", () => {
      this.upgrades.delete(socket);
      this.check();
    });
  }

  /** Readiness goes false and agents are refused; callers are still served (on connections that then close). */
  leave(): void {
    if (this.phase === "serving") this.phase = "leaving";
  }

  /** Stops admitting and ends every watch at its next event boundary. */
  begin(): void {
    this.phase = "draining";
    for (const watch of this.watches) watch.end();
  }

  /**
   * Resolves once nothing admitted is in flight, or after `graceMs`; says
   * how many were still in flight (the caller cuts them). It waits
   * `lingerMs` (at most the grace) first whatever is in flight: a connection
   * accepted just before the listener closed may still be in its TLS
   * handshake, its first request not yet read, and the end of the drain
   * would cut it (the caller's "socket hang up", its request never seen).
   */
  async settle(graceMs: number, lingerMs = 0): Promise<number> {
    const linger = Math.min(graceMs, lingerMs);
    if (linger > 0) await new Promise((resolve) => setTimeout(resolve, linger));
    graceMs -= linger;
    if (this.inFlight > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, graceMs);
        this.settled = () => {
          if (this.inFlight > 0) return;
          clearTimeout(timer);
          resolve();
        };
      });
      this.settled = undefined;
    }
    return this.inFlight;
  }

  private check(): void {
    this.settled?.();
  }
}

/**
 * The request's connection is to close once it is answered: `Connection:
 * close` on HTTP/1.1, GOAWAY on h2 (the session's open streams run on; a new
 * request goes on a new connection).
 */
function closeAfter(req: IncomingMessage, res: ServerResponse): void {
  res.shouldKeepAlive = false;
  const session = (req as { stream?: { session?: { closed: boolean; destroyed: boolean; close(): void } } })
    .stream?.session;
  if (session && !session.closed && !session.destroyed) session.close();
}

/** The connection a request came on: for HTTP/2 its session (each stream has a socket object of its own). */
function connectionOf(req: IncomingMessage): object {
  const session = (req as { stream?: { session?: object } }).stream?.session;
  return session ?? req.socket;
}

/** Calls `done` once `socket` has handed everything written to it to the kernel, or closed. */
function flushed(socket: Duplex | null, done: () => void): void {
  if (!socket || socket.destroyed || socket.writableLength === 0) {
    done();
    return;
  }
  const check = () => {
    if (!socket.destroyed && socket.writableLength > 0) return;
    socket.off("drain", check);
    socket.off("close", check);
    done();
  };
  socket.on("drain", check);
  socket.on("close", check);
}
