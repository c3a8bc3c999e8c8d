// /clusters/<name>/… : admits a host caller to a member cluster and forwards
// the request through that cluster's tunnel. Plain requests go through
// http-proxy-3 over a pool of tunnel streams; upgrades (SPDY is a POST, so
// http-proxy would drop it) are relayed one per stream (upgrade-relay.ts).
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { type StatusReason, sendStatus, statusResponseHead } from "@tether/common";
import { createProxyServer } from "http-proxy-3";
import { type Attempt, type FailureRateLimit, sourceKey } from "../http/failure-rate-limit.js";
import { stripConnectionHeaders } from "../http/connection-headers.js";
import { type Logger, loggablePath } from "../logger.js";
import { isValidClusterName } from "../pki/pki.js";
import type { AuditLog } from "../observe/audit-log.js";
import type { AuthMode, Store } from "../store/state-store.js";
import type { AgentSession, AgentSessions } from "./agent-sessions.js";
import { type AuthenticatedCaller, authenticate, mayUseCluster } from "./authenticate.js";
import { type CallerQuota, callerKey, releaseOnClose } from "./caller-quota.js";
import { rewriteHeaders, rewriteRawHeaders } from "./forwarded-headers.js";
import { sessionFullStatus } from "./session-full.js";
import { checkUpgrade, closeWith, relayUpgrade } from "./upgrade-relay.js";

/** Plain requests forwarded in passthrough mode (whose member 401s count as failed authentications). */
const passthroughRequests = new WeakSet<IncomingMessage>();

export const CLUSTER_PATH = /^\/clusters\/([^/?#]*)(\/[^?#]*)?(\?.*)?$/;
const UNASKED_SWITCH = "the member switched protocols on a request that asked for no upgrade";

/** Why a request or upgrade was answered by Tether instead of the member. */
export type RefusalReason =
  | "bad_request"
  | "not_found"
  | "rate_limited"
  | "unauthorized"
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
  | {
      ok: true;
      mode: AuthMode;
      caller?: AuthenticatedCaller;
      entry: AgentSession;
      path: string;
      /** Gives the caller's quota slot back; call when the request or upgraded connection closes. */
      release: () => void;
    }
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
}

export class ClusterProxy {
  private readonly proxy = createProxyServer({ xfwd: false, ws: false, proxyTimeout: 0, timeout: 0 });
  private lastFullWarning = 0;

  constructor(private readonly deps: ClusterProxyDeps) {
    // Errors are answered per request (see handleRequest); this keeps
    // http-proxy from throwing on an error nobody handles.
    this.proxy.on("error", () => {});
    // A 101 to a request that asked for no upgrade: Node hands the stream to an
    // 'upgrade' listener or, with none, drops it and the caller would wait forever.
    this.proxy.on("proxyReq", (proxyReq, _req, res) => {
      proxyReq.on("upgrade", (_upRes, stream) => {
        stream.destroy();
        sendStatus(res, "BadGateway", UNASKED_SWITCH);
      });
    });
    // http-proxy sets the head and pipes the body in this same tick; Node then
    // holds the head back until the first body byte. A watch may have none for
    // minutes, and clients wait for the head before they act: send it now.
    this.proxy.on("proxyRes", (proxyRes, req, res) => {
      if (proxyRes.statusCode === 101) {
        proxyRes.destroy();
        sendStatus(res, "BadGateway", UNASKED_SWITCH);
        return;
      }
      // In passthrough mode the member judges the caller's credential: its 401 is a failed authentication
      // here too. In impersonate mode a 401 is about the agent's own credential, not the caller's.
      if (proxyRes.statusCode === 401 && passthroughRequests.has(req)) {
        this.deps.failures.fail(sourceKey(req.socket.remoteAddress));
        this.deps.metrics?.authFailure("proxy", "member_rejected");
      }
      this.deps.audit?.response(req, proxyRes);
      if (req.httpVersionMajor >= 2) stripConnectionHeaders(proxyRes.headers);
      process.nextTick(() => {
        if (!res.headersSent && !res.writableEnded) res.flushHeaders();
      });
    });
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
    const cluster = await this.deps.store.getCluster(name);
    if (!cluster) {
      return {
        ok: false,
        reason: "NotFound",
        why: "not_found",
        message: `cluster "${name}" is not registered with this Tether server (tether-server cluster list shows those that are)`,
      };
    }
    const source = sourceKey(req.socket.remoteAddress);
    const attempt = this.deps.failures.begin(source);
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
      caller = await authenticate(req, this.deps.store).catch((err: unknown) => {
        attempt.succeeded();
        throw err;
      });
      if (!caller) {
        this.countFailure(attempt, source);
        return {
          ok: false,
          reason: "Unauthorized",
          why: "unauthorized",
          message:
            "Tether could not authenticate you: send a Tether token (tether-server kubeconfig NAME --user U prints a kubeconfig with one) or a Tether client certificate",
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
    const entry = this.deps.sessions.get(name);
    if (!entry) {
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
    return { ok: true, mode: cluster.auth, ...(caller ? { caller } : {}), entry, path, release };
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

  async handleRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const audit = this.deps.audit?.request(req, res);
    const admission = await this.admit(req);
    if (!admission.ok) {
      this.deps.metrics?.refused(admission.why);
      audit?.refused(admission.reason, admission.message, admission.caller);
      this.logRefusal(req, admission.reason, "refused");
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
    if (mode === "passthrough") passthroughRequests.add(req);
    this.deps.metrics?.requestStarted(req, res, entry.cluster, path);
    audit?.admitted(entry.cluster, mode, caller);
    rewriteHeaders(req.headers, mode, caller, req.socket.remoteAddress);
    req.url = path;
    this.proxy.web(req, res, { target: "http://apiserver.tether", agent: entry.httpAgent(mode) }, (err) => {
      const full = sessionFullStatus(err, entry.cluster);
      if (!full) this.deps.log.warn({ cluster: entry.cluster, err: err.message }, "forwarding failed");
      if (full) {
        this.deps.metrics?.refusedFull(err);
        this.warnSessionFull(entry.cluster);
        sendStatus(res, full.reason, full.message, full.retryAfterSeconds);
      } else if (!res.headersSent) {
        const gone = entry.session.closed || entry.session.goingAway;
        sendStatus(
          res,
          gone ? "ServiceUnavailable" : "BadGateway",
          gone
            ? `the Tether agent of cluster "${entry.cluster}" disconnected during the request`
            : `forwarding to cluster "${entry.cluster}" failed: ${err.message}`,
        );
      } else {
        res.destroy();
      }
    });
  }

  async handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on("error", () => socket.destroy());
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
    const upgradeEnded = this.deps.metrics?.upgradeStarted(admission.entry.cluster, admission.path);
    if (upgradeEnded) releaseOnClose(socket, upgradeEnded);
    // No bytes either way for this long: the exec or port-forward is abandoned.
    (socket as Socket).setTimeout(this.deps.streamIdleTimeoutMs, () => socket.destroy());
    const { mode, caller, entry, path } = admission;
    audit?.admitted(entry.cluster, mode, caller);
    relayUpgrade({
      ...(audit ? { audit } : {}),
      socket,
      head,
      method: req.method ?? "GET",
      path,
      headers: rewriteRawHeaders(req.rawHeaders, mode, caller, req.socket.remoteAddress),
      protocol: upgrade.protocol,
      open: () => entry.openStream(mode),
      failure: (err) => {
        const full = sessionFullStatus(err, entry.cluster);
        if (full) {
          this.deps.metrics?.refusedFull(err);
          this.warnSessionFull(entry.cluster);
          return [full.reason, full.message, full.retryAfterSeconds];
        }
        this.deps.log.warn({ cluster: entry.cluster, err: err.message }, "upgrade forwarding failed");
        const gone = entry.session.closed || entry.session.goingAway;
        return gone
          ? [
              "ServiceUnavailable",
              `the Tether agent of cluster "${entry.cluster}" disconnected during the request`,
            ]
          : ["BadGateway", `forwarding to cluster "${entry.cluster}" failed: ${err.message}`];
      },
    });
  }
}
