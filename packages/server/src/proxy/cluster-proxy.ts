// /clusters/<name>/… : admits a host caller to a member cluster and forwards
// the request through that cluster's tunnel. Plain requests go with a
// structured head (plain-forward.ts), or as raw HTTP/1.1 to agents from before
// it (raw-forward.ts); upgrades are relayed one per stream (upgrade-relay.ts).
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { performance } from "node:perf_hooks";
import type { Duplex, Readable } from "node:stream";
import { type StatusReason, sendStatus, statusResponseHead } from "@tether/common";
import {
  type Attempt,
  type FailureRateLimit,
  presentedCredential,
  sourceKey,
} from "../http/failure-rate-limit.js";
import { type Logger, loggablePath } from "../logger.js";
import { isValidClusterName } from "../pki/pki.js";
import type { AuditLog } from "../observe/audit-log.js";
import type { Frozen } from "../store/records.js";
import type { AuthMode, ClusterRecord, Store } from "../store/state-store.js";
import type { AgentSession, AgentSessions } from "./agent-sessions.js";
import {
  type AuthenticatedCaller,
  authenticate,
  mayUseCluster,
  unauthenticatedMessage,
} from "./authenticate.js";
import { type CallerQuota, callerKey, releaseOnClose } from "./caller-quota.js";
import { rewriteHeaders, rewriteRawHeaders } from "./forwarded-headers.js";
import { IdentityUnavailableError } from "./identity/identity-error.js";
import type { IdentitySources } from "./identity/identity-sources.js";
import { actingIdentity, callerImpersonation } from "./impersonation.js";
import type { LiveCredentials } from "./live-credentials.js";
import { forwardPlain } from "./plain-forward.js";
import type { ReplayableBody } from "./replayable-body.js";
import { forwardRaw } from "./raw-forward.js";
import { isServiceRequest, ServiceProxy } from "./service-proxy.js";
import {
  type Arrival,
  arrivalOf,
  carriesReplicaHeaders,
  NOT_HELD_HEADER,
  type ReplicaHop,
} from "./replica-hop.js";
import type { Owner, Ownership } from "../store/ownership.js";
import { sessionFullStatus } from "./session-full.js";
import { checkUpgrade, closeWith, relayUpgrade } from "./upgrade-relay.js";

/** Plain requests forwarded in passthrough mode (whose member 401s count as failed authentications). */
const passthroughRequests = new WeakSet<IncomingMessage>();
/** How often a request waiting for a cluster's next owner looks again (the Lease cache is watch-fed). */
const OWNER_POLL_MS = 50;
/** Times a request whose stream the agent never took is sent again: each agent can go away once. */
const MAX_RESENDS = 3;

export const CLUSTER_PATH = /^\/clusters\/([^/?#]*)(\/[^?#]*)?(\?.*)?$/;

/** Why a request or upgrade was answered by Tether instead of the member. */
export type RefusalReason =
  | "bad_request"
  | "not_found"
  | "rate_limited"
  | "unauthorized"
  | "identity_unavailable"
  | "forbidden"
  | "no_agent"
  | "caller_quota"
  | "session_full"
  | "agent_stream_limit";

/** What the proxy reports as it admits and forwards (observe/metrics.ts implements it). */
export interface ProxyObserver {
  refused(reason: RefusalReason): void;
  /** A stream open refused because this end's or the agent's end of the tunnel was full. */
  refusedFull(err: unknown): void;
  authFailure(endpoint: "proxy", reason: "invalid_credential" | "member_rejected"): void;
  /** A request about to be forwarded; `path` is the member path with its query. */
  requestStarted(req: IncomingMessage, res: ServerResponse, cluster: string, path: string): void;
  /** An upgrade about to be relayed; returns what to call when its connection closes. */
  upgradeStarted(cluster: string, path: string): () => void;
}

type Admission =
  | ({
      ok: true;
      mode: AuthMode;
      caller?: AuthenticatedCaller;
      /** The impersonation headers of the identity the member let the caller act as (--as). */
      acting?: [string, string][];
      cluster: string;
      path: string;
      /** Gives the caller's quota slot back; call when the request or upgraded connection closes. */
      release: () => void;
      /** The cluster is served here (`entry`) or held by another replica (`hop`, replica-hop.ts). */
    } & ({ entry: AgentSession; hop?: undefined } | { hop: Owner; entry?: undefined }))
  | {
      ok: false;
      reason: StatusReason;
      why: RefusalReason;
      message: string;
      retryAfterSeconds?: number;
      /** Known when the caller authenticated but may not use the cluster. */
      caller?: AuthenticatedCaller;
    };

export interface ClusterProxyDeps {
  store: Store;
  sessions: AgentSessions;
  log: Logger;
  quota: CallerQuota;
  failures: FailureRateLimit;
  streamIdleTimeoutMs: number;
  metrics?: ProxyObserver;
  audit?: AuditLog;
  /** Host service-account and OIDC tokens; Tether tokens and certificates only when empty. */
  identity?: IdentitySources;
  /** What each caller's credential holds open, ended when it expires or is revoked. */
  live?: LiveCredentials;
  /** Several replicas: who holds which cluster, and the hop to the holder. */
  replicas?: { ownership: Ownership; hop: ReplicaHop };
}

export class ClusterProxy {
  private lastFullWarning = 0;
  private readonly services: ServiceProxy;

  constructor(private readonly deps: ClusterProxyDeps) {
    this.services = new ServiceProxy(deps);
  }

  private async admit(req: IncomingMessage): Promise<Admission> {
    const m = CLUSTER_PATH.exec(req.url ?? "");
    const name = m?.[1] ?? "";
    if (!isValidClusterName(name)) {
      return {
        ok: false,
        reason: "NotFound",
        why: "not_found",
        message: `"${name}" is not a valid cluster name`,
      };
    }
    const path = (m?.[2] || "/") + (m?.[3] ?? "");
    const arrival = arrivalOf(req);
    if (!arrival && carriesReplicaHeaders(req.headers)) {
      return {
        ok: false,
        reason: "BadRequest",
        why: "bad_request",
        message: "Tether-Replica-* headers are accepted only from other tether-server replicas",
      };
    }
    const cluster = await this.deps.store.getCluster(name);
    if (!cluster) {
      return {
        ok: false,
        reason: "NotFound",
        why: "not_found",
        message: `cluster "${name}" is not registered with this Tether server (tether-server cluster list shows those that are)`,
      };
    }
    if (arrival) return this.admitArrival(req, arrival, cluster, path);
    const source = sourceKey(req.socket.remoteAddress);
    const attempt = this.deps.failures.begin(source, presentedCredential(req));
    if (typeof attempt === "number") {
      return {
        ok: false,
        reason: "TooManyRequests",
        why: "rate_limited",
        message: `too many failed authentications from your address: try again in ${attempt} s`,
        retryAfterSeconds: attempt,
      };
    }
    let caller: AuthenticatedCaller | undefined;
    if (cluster.auth === "impersonate") {
      try {
        caller = await authenticate(req, this.deps.store, this.deps.identity);
      } catch (err) {
        attempt.succeeded();
        if (!(err instanceof IdentityUnavailableError)) throw err;
        this.deps.log.warn({ err: err.message }, "an identity source is unavailable");
        return {
          ok: false,
          reason: "ServiceUnavailable",
          why: "identity_unavailable",
          message: err.message,
          retryAfterSeconds: 5,
        };
      }
      if (!caller) {
        this.countFailure(attempt, source);
        return {
          ok: false,
          reason: "Unauthorized",
          why: "unauthorized",
          message: await unauthenticatedMessage(req, this.deps.store),
        };
      }
      attempt.succeeded();
      if (!mayUseCluster(caller, cluster)) {
        return {
          ok: false,
          reason: "Forbidden",
          why: "forbidden",
          message: `user "${caller.user}" may not use cluster "${name}" through Tether`,
          caller,
        };
      }
    } else if (!req.headers.authorization) {
      this.countFailure(attempt, source);
      return {
        ok: false,
        reason: "Unauthorized",
        why: "unauthorized",
        message: `cluster "${name}" uses passthrough authentication: send the member cluster's own bearer token`,
      };
    }
    // Passthrough: the member judges the credential; its 401 is counted in proxyRes.
    attempt.succeeded();
    const { entry, owner } = await this.route(name);
    if (!entry && !owner) {
      return {
        ok: false,
        reason: "ServiceUnavailable",
        why: "no_agent",
        message: `cluster "${name}" has no connected Tether agent; check the agent's logs in that cluster`,
      };
    }
    const release = this.deps.quota.acquire(name, callerKey(req, caller));
    if (!release) {
      return {
        ok: false,
        reason: "TooManyRequests",
        why: "caller_quota",
        message: `you hold ${this.deps.quota.max} requests and connections on cluster "${name}" already: close some and retry`,
        retryAfterSeconds: 1,
      };
    }
    const base = {
      ok: true as const,
      mode: cluster.auth,
      ...(caller ? { caller } : {}),
      cluster: name,
      path,
    };
    // The owner checks a caller's own --as, through its own session.
    if (!entry) return { ...base, hop: owner!, release };
    return this.withImpersonation(req, { ...base, entry, release });
  }

  /** The caller's own --as: the member must allow it (impersonation.ts). */
  private async withImpersonation(
    req: IncomingMessage,
    a: Extract<Admission, { ok: true }> & { entry: AgentSession },
  ): Promise<Admission> {
    if (!a.caller) return a;
    const imp = await callerImpersonation(
      req.rawHeaders,
      a.caller,
      a.entry.httpAgent("impersonate"),
      a.cluster,
    );
    if (!imp.ok) {
      a.release();
      const why =
        imp.reason === "BadRequest" ? "bad_request" : imp.reason === "Forbidden" ? "forbidden" : "no_agent";
      return { ok: false, reason: imp.reason, why, message: imp.message, caller: a.caller };
    }
    return imp.acting ? { ...a, acting: imp.acting } : a;
  }

  /**
   * Where a request for `cluster` goes: a session here, or the replica that
   * holds it. While the cluster changes hands (its owner drained, its agent
   * is dialing another replica) the request waits for the next owner, a
   * Lease duration at most, rather than fail: a rolling restart costs callers
   * latency, not errors.
   */
  private async route(cluster: string): Promise<{ entry?: AgentSession; owner?: Owner }> {
    const ownership = this.deps.replicas?.ownership;
    const until = performance.now() + (ownership?.leaseDurationMs ?? 0);
    for (;;) {
      const entry = this.localSession(cluster);
      if (entry) return { entry };
      const owner = ownership?.owner(cluster);
      if (owner) return { owner };
      if (!ownership?.changingHands(cluster) || performance.now() >= until) return {};
      await new Promise((resolve) => setTimeout(resolve, OWNER_POLL_MS));
    }
  }

  /** The session this replica serves `cluster` through: with replicas, only while it holds the owner Lease. */
  private localSession(cluster: string): AgentSession | undefined {
    const entry = this.deps.sessions.get(cluster);
    const ownership = this.deps.replicas?.ownership;
    return entry && (!ownership || ownership.holds(cluster)) ? entry : undefined;
  }

  /**
   * A request another replica authenticated and forwarded here: served only
   * if this replica holds the cluster under the generation it was routed to.
   */
  private async admitArrival(
    req: IncomingMessage,
    arrival: Arrival,
    cluster: Frozen<ClusterRecord>,
    path: string,
  ): Promise<Admission> {
    const ownership = this.deps.replicas?.ownership;
    const entry = this.deps.sessions.get(cluster.name);
    const { caller } = arrival;
    if (
      !entry ||
      !ownership ||
      arrival.owner.replica !== ownership.replicaId ||
      !ownership.holds(cluster.name, arrival.owner.generation)
    ) {
      return {
        ok: false,
        reason: "ServiceUnavailable",
        why: "no_agent",
        message: `cluster "${cluster.name}" is not held by the replica it was forwarded to (a request takes one hop at most): try again`,
        retryAfterSeconds: 1,
      };
    }
    if (
      cluster.auth === "impersonate" ? !caller || !mayUseCluster(caller, cluster) : !req.headers.authorization
    ) {
      return {
        ok: false,
        reason: "Forbidden",
        why: "forbidden",
        message: `the forwarded caller may not use cluster "${cluster.name}"`,
      };
    }
    const release = this.deps.quota.acquire(cluster.name, callerKey(req, caller));
    if (!release) {
      return {
        ok: false,
        reason: "TooManyRequests",
        why: "caller_quota",
        message: `you hold ${this.deps.quota.max} requests and connections on cluster "${cluster.name}" already: close some and retry`,
        retryAfterSeconds: 1,
      };
    }
    return this.withImpersonation(req, {
      ok: true,
      mode: cluster.auth,
      ...(caller ? { caller } : {}),
      cluster: cluster.name,
      path,
      entry,
      release,
    });
  }

  /** Counts a failed authentication, and says once when it makes the source wait. */
  private countFailure(attempt: Attempt, source: string): void {
    this.deps.metrics?.authFailure("proxy", "invalid_credential");
    if (attempt.failed()) {
      this.deps.log.warn({ source }, "too many failed authentications: the source address must wait");
    }
  }

  /** A full session is worth a warning, but not one per refused request: at most one every 10 s. */
  private warnSessionFull(cluster: string): void {
    if (Date.now() - this.lastFullWarning < 10_000) return;
    this.lastFullWarning = Date.now();
    this.deps.log.warn({ cluster }, "the cluster's tunnel is full: requests get 503 until streams close");
  }

  /** Refusals of the limits are logged at debug level: a flood of them must not flood the log. */
  private logRefusal(req: IncomingMessage, reason: StatusReason, message: string): void {
    const fields = { path: loggablePath(req.url), reason };
    if (reason === "TooManyRequests") this.deps.log.debug(fields, message);
    else this.deps.log.info(fields, message);
  }

  private hopTo(a: {
    hop: Owner;
    cluster: string;
    path: string;
    mode: AuthMode;
    caller?: AuthenticatedCaller;
  }) {
    return {
      owner: a.hop,
      cluster: a.cluster,
      url: `/clusters/${a.cluster}${a.path}`,
      mode: a.mode,
      ...(a.caller ? { caller: a.caller } : {}),
    };
  }

  async handleRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (isServiceRequest(req.url)) return this.services.handleRequest(req, res);
    const audit = this.deps.audit?.request(req, res);
    const admission = await this.admit(req);
    if (!admission.ok) {
      this.deps.metrics?.refused(admission.why);
      audit?.refused(admission.reason, admission.message, admission.caller);
      this.logRefusal(req, admission.reason, "refused");
      // A forwarded request for a cluster not held here: the replica that sent it may route it again.
      if (admission.why === "no_agent" && arrivalOf(req)) res.setHeader(NOT_HELD_HEADER, "1");
      sendStatus(res, admission.reason, admission.message, admission.retryAfterSeconds);
      return;
    }
    // A response still queued behind a pipelined one never emits 'close' when the connection goes, so
    // the connection gives the slot back too; a kept-alive connection must not collect one listener per request.
    releaseOnClose(req.socket, admission.release);
    releaseOnClose(res, () => {
      req.socket.off("close", admission.release);
      admission.release();
    });
    const { mode, caller, entry, path } = admission;
    // A revoked or expired credential's watch or logs -f ends here (live-credentials.ts).
    if (this.deps.live)
      releaseOnClose(
        res,
        this.deps.live.hold(caller, () => res.destroy()),
      );
    this.deps.metrics?.requestStarted(req, res, admission.cluster, path);
    audit?.admitted(admission.cluster, mode, caller, actingIdentity(admission.acting));
    // A passthrough caller's member 401 counts here, where its source is known, also across the hop.
    if (mode === "passthrough" && !arrivalOf(req)) passthroughRequests.add(req);
    if (!entry) {
      if (mode === "passthrough")
        res.once("finish", () => {
          if (res.statusCode !== 401) return;
          this.deps.failures.fail(sourceKey(req.socket.remoteAddress));
          this.deps.metrics?.authFailure("proxy", "member_rejected");
        });
      // An admission names a hop only when replicas are configured.
      return this.deps.replicas!.hop.forward(req, res, this.hopTo(admission), () => {
        void this.heldHere(req, res, admission);
      });
    }
    this.serveLocal(req, res, { ...admission, entry });
  }

  /**
   * A forwarded request whose owner refused it or was gone, and that waited
   * for the cluster's next owner: the next owner is this replica.
   */
  private async heldHere(
    req: IncomingMessage,
    res: ServerResponse,
    a: Extract<Admission, { ok: true }>,
  ): Promise<void> {
    // The Lease may name this replica a moment before or after its session is usable (a claim on the
    // agent's connect, a session going away while its agent redials): wait for it while the Lease
    // says so, a Lease duration at most, rather than fail (rolling-restart e2e's "changed hands" 503).
    const ownership = this.deps.replicas?.ownership;
    const until = performance.now() + (ownership?.leaseDurationMs ?? 0);
    let entry = this.localSession(a.cluster);
    while (
      !entry &&
      !res.destroyed &&
      performance.now() < until &&
      (ownership?.holds(a.cluster) || ownership?.changingHands(a.cluster))
    ) {
      await new Promise((resolve) => setTimeout(resolve, OWNER_POLL_MS));
      entry = this.localSession(a.cluster);
    }
    if (res.destroyed) return;
    if (!entry) {
      sendStatus(res, "ServiceUnavailable", `cluster "${a.cluster}" changed hands: try again`, 1);
      return;
    }
    for (const name of Object.keys(req.headers))
      if (name.startsWith("tether-replica-")) delete req.headers[name];
    // The slot is the first admission's, given back when the response closes.
    const checked = await this.withImpersonation(req, { ...a, hop: undefined, entry, release: () => {} });
    if (!checked.ok) {
      sendStatus(res, checked.reason, checked.message, checked.retryAfterSeconds);
      return;
    }
    this.serveLocal(req, res, { ...checked, hop: undefined, entry });
  }

  /** A plain request through this replica's own session. */
  private serveLocal(
    req: IncomingMessage,
    res: ServerResponse,
    admission: Extract<Admission, { ok: true }> & { entry: AgentSession },
  ): void {
    const { mode, caller, entry, path } = admission;
    // The caller's request as it came, should it have to go the hop after all (resend).
    const original = { headers: { ...req.headers }, url: req.url ?? "" };
    rewriteHeaders(
      req.headers,
      mode,
      caller,
      arrivalOf(req)?.source || req.socket.remoteAddress,
      admission.acting,
    );
    req.url = path;
    if (entry.structuredHead) {
      this.forwardOn(req, res, admission, original, undefined, 0);
      return;
    }
    forwardRaw({
      req,
      res,
      path,
      headers: req.headers,
      agent: entry.httpAgent(mode),
      answered: (status, body) => this.answered(req, status, body),
      failure: (err) => this.forwardingFailed(entry, res, err),
    });
  }

  /** Forwards a request whose headers are rewritten on `a.entry`, with a structured head. */
  private forwardOn(
    req: IncomingMessage,
    res: ServerResponse,
    a: Extract<Admission, { ok: true }> & { entry: AgentSession },
    original: { headers: IncomingMessage["headers"]; url: string },
    body: ReplayableBody | undefined,
    resends: number,
  ): void {
    const { entry } = a;
    forwardPlain({
      req,
      res,
      path: a.path,
      headers: req.headers,
      open: () => entry.openStream(a.mode, { structuredHead: true }),
      answered: (status, b) => this.answered(req, status, b),
      failure: (err) => this.forwardingFailed(entry, res, err),
      refused: (err, b) => {
        if (resends >= MAX_RESENDS) return false;
        void this.resend(req, res, a, original, b, resends + 1, err);
        return true;
      },
      ...(body ? { body } : {}),
    });
  }

  /**
   * A request whose stream the agent never took (it was going away: a drain,
   * a rollout of agents) did nothing on the member, so it goes again: on
   * another session of the cluster here, or, once the cluster changed hands
   * and if it had no body, to its next owner.
   */
  private async resend(
    req: IncomingMessage,
    res: ServerResponse,
    a: Extract<Admission, { ok: true }> & { entry: AgentSession },
    original: { headers: IncomingMessage["headers"]; url: string },
    body: ReplayableBody,
    resends: number,
    err: Error,
  ): Promise<void> {
    const { entry, owner } = await this.route(a.cluster);
    if (res.destroyed) return body.release();
    this.deps.log.debug(
      { cluster: a.cluster, err: err.message, resends },
      "the agent never took the stream: sent again",
    );
    if (entry?.structuredHead) {
      this.forwardOn(req, res, { ...a, entry }, original, body, resends);
      return;
    }
    if (owner && body.empty && this.deps.replicas) {
      body.release();
      // The owner rewrites them for its member itself.
      for (const name of Object.keys(req.headers)) delete req.headers[name];
      Object.assign(req.headers, original.headers);
      req.url = original.url;
      const hop = { ...a, hop: owner, entry: undefined };
      this.deps.replicas.hop.forward(req, res, this.hopTo(hop), () => void this.heldHere(req, res, hop));
      return;
    }
    body.release();
    this.forwardingFailed(a.entry, res, err);
  }

  /** The member answered a plain request: its 401 may count against the caller, and the audit log counts the body. */
  private answered(req: IncomingMessage, status: number, body: Readable): void {
    // In passthrough mode the member judges the caller's credential: its 401 is a failed authentication
    // here too. In impersonate mode a 401 is about the agent's own credential, not the caller's.
    if (status === 401 && passthroughRequests.has(req)) {
      this.deps.failures.fail(sourceKey(req.socket.remoteAddress));
      this.deps.metrics?.authFailure("proxy", "member_rejected");
    }
    this.deps.audit?.response(req, status, body);
  }

  private forwardingFailed(entry: AgentSession, res: ServerResponse, err: Error): void {
    const [reason, message, retryAfterSeconds] = this.failureStatus(entry, err, "forwarding failed");
    // After the head the caller can only learn of it as a cut response.
    if (res.headersSent) res.destroy();
    else sendStatus(res, reason, message, retryAfterSeconds);
  }

  async handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on("error", () => socket.destroy());
    if (isServiceRequest(req.url)) return this.services.handleUpgrade(req, socket);
    const audit = this.deps.audit?.upgrade(req, socket);
    const upgrade = checkUpgrade(req);
    if (!upgrade.ok) {
      this.deps.metrics?.refused("bad_request");
      audit?.refused("BadRequest", upgrade.message);
      this.logRefusal(req, "BadRequest", "refused upgrade");
      const answer = statusResponseHead("BadRequest", upgrade.message);
      closeWith(socket, audit?.tagged(answer) ?? answer);
      return;
    }
    const admission = await this.admit(req);
    if (!admission.ok) {
      this.deps.metrics?.refused(admission.why);
      audit?.refused(admission.reason, admission.message, admission.caller);
      this.logRefusal(req, admission.reason, "refused upgrade");
      const answer = statusResponseHead(admission.reason, admission.message, admission.retryAfterSeconds);
      closeWith(socket, audit?.tagged(answer) ?? answer);
      return;
    }
    releaseOnClose(socket, admission.release);
    if (this.deps.live)
      releaseOnClose(
        socket,
        this.deps.live.hold(admission.caller, () => socket.destroy()),
      );
    const upgradeEnded = this.deps.metrics?.upgradeStarted(admission.cluster, admission.path);
    if (upgradeEnded) releaseOnClose(socket, upgradeEnded);
    // No bytes either way for this long: the exec or port-forward is abandoned.
    (socket as Socket).setTimeout(this.deps.streamIdleTimeoutMs, () => socket.destroy());
    const { mode, caller, entry, path } = admission;
    audit?.admitted(admission.cluster, mode, caller, actingIdentity(admission.acting));
    if (!entry) {
      const hop = this.deps.replicas!.hop;
      return hop.forwardUpgrade(req, socket, head, upgrade.protocol, this.hopTo(admission));
    }
    const relay = (entry: AgentSession, resends: number) =>
      relayUpgrade({
        ...(audit ? { audit } : {}),
        socket,
        head,
        method: req.method ?? "GET",
        path,
        headers: rewriteRawHeaders(
          req.rawHeaders,
          mode,
          caller,
          arrivalOf(req)?.source || req.socket.remoteAddress,
          admission.acting,
        ),
        protocol: upgrade.protocol,
        open: () => entry.openStream(mode),
        failure: (err) => this.failureStatus(entry, err, "upgrade forwarding failed"),
        refused: (err) => {
          if (resends >= MAX_RESENDS) return false;
          // The agent was going away: another session of the cluster, or the owner it changed hands to.
          void this.route(admission.cluster).then(({ entry: next, owner }) => {
            if (socket.destroyed) return;
            if (next) return relay(next, resends + 1);
            if (owner && this.deps.replicas)
              return this.deps.replicas.hop.forwardUpgrade(
                req,
                socket,
                head,
                upgrade.protocol,
                this.hopTo({ ...admission, hop: owner }),
              );
            const [reason, message, retryAfterSeconds] = this.failureStatus(
              entry,
              err,
              "upgrade forwarding failed",
            );
            closeWith(socket, statusResponseHead(reason, message, retryAfterSeconds));
          });
          return true;
        },
      });
    relay(entry, 0);
  }

  /**
   * What the caller is told when forwarding to `entry` failed: the session was
   * full, its agent went away, or the stream failed otherwise. Counts and logs it.
   */
  private failureStatus(
    entry: AgentSession,
    err: Error,
    logMessage: string,
  ): [reason: StatusReason, message: string, retryAfterSeconds?: number] {
    const full = sessionFullStatus(err, entry.cluster);
    if (full) {
      this.deps.metrics?.refusedFull(err);
      this.warnSessionFull(entry.cluster);
      return [full.reason, full.message, full.retryAfterSeconds];
    }
    this.deps.log.warn({ cluster: entry.cluster, err: err.message }, logMessage);
    const gone = entry.session.closed || entry.session.goingAway;
    return gone
      ? [
          "ServiceUnavailable",
          `the Tether agent of cluster "${entry.cluster}" disconnected during the request`,
        ]
      : ["BadGateway", `forwarding to cluster "${entry.cluster}" failed: ${err.message}`];
  }
}
