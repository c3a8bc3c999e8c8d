// /clusters/<name>/services/<service>/… : an in-cluster service the member's
// agent exposes (tether-agent --expose <service>=URL). The apiserver serves
// nothing under /services/ at its root (its services are under /api/v1/…), so
// the prefix is free; host routing (<name>.<domain>/services/<service>/) ends
// here too, rewritten to the path form. Callers always authenticate to Tether
// (a Tether token, a user certificate, or an OIDC or host service-account
// token when those sources are configured; whatever the cluster's auth mode) and must
// be listed for the service in the cluster's record: a service nobody was
// allowed is usable by nobody. The service learns who calls from the
// X-Tether-* identity headers, which only Tether sets; the caller's
// credentials stay here. Plain HTTP only: upgrades are refused.
import { Agent as HttpAgent, type IncomingMessage, type ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import {
  exposedServiceStream,
  identityHeaderValue,
  isExposedServiceName,
  SERVICE_CLUSTER_HEADER,
  SERVICE_GROUP_HEADER,
  SERVICE_USER_HEADER,
  type StatusReason,
  sendStatus,
  servicePathRefusal,
  statusResponseHead,
} from "@tether/common";
import { isTetherError, ResetCode } from "@tether/tunnel";
import { presentedCredential, sourceKey } from "../http/failure-rate-limit.js";
import { isValidClusterName } from "../pki/pki.js";
import type { Frozen } from "../store/records.js";
import type { ClusterRecord } from "../store/state-store.js";
import type { AgentSession } from "./agent-sessions.js";
import { type AuthenticatedCaller, authenticate, unauthenticatedMessage } from "./authenticate.js";
import { callerKey, releaseOnClose } from "./caller-quota.js";
import type { ClusterProxyDeps, RefusalReason } from "./cluster-proxy.js";
import { IdentityUnavailableError } from "./identity/identity-error.js";
import { forwardRaw } from "./raw-forward.js";
import { sessionFullStatus } from "./session-full.js";
import { closeWith } from "./upgrade-relay.js";

const SERVICE_URL = /^\/clusters\/([^/?#]*)\/services(?:\/([^/?#]*))?(\/[^?#]*)?(\?.*)?$/;

/** Whether a request (path form) is for an exposed service rather than the apiserver. */
export function isServiceRequest(url: string | undefined): boolean {
  return SERVICE_URL.test(url ?? "");
}

/** The service a request names, when the name is valid (for the audit line, refused requests too). */
function serviceNamed(url: string | undefined): string | undefined {
  const name = SERVICE_URL.exec(url ?? "")?.[2];
  return name !== undefined && isExposedServiceName(name) ? name : undefined;
}

/**
 * Whether a caller may use an exposed service: it is listed for the service
 * (by user or group), and a token must be scoped to the cluster as well. The
 * cluster's own allowed users and groups neither grant nor withhold it.
 */
export function mayUseService(
  caller: AuthenticatedCaller,
  cluster: Frozen<ClusterRecord>,
  service: string,
): boolean {
  const access = cluster.services?.[service];
  if (!access) return false;
  if (caller.via === "token") {
    const scope = caller.clusters ?? [];
    if (!scope.includes("*") && !scope.includes(cluster.name)) return false;
  }
  return (
    access.allowedUsers.includes(caller.user) || caller.groups.some((g) => access.allowedGroups.includes(g))
  );
}

const HOP_BY_HOP = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"];
/** What a caller may not pass on: credentials for Tether, forged sources, forged identity headers. */
const DROPPED =
  /^(authorization|proxy-authorization|cookie|impersonate-.*|x-tether-.*|x-forwarded-.*|forwarded|x-real-ip)$/i;

/** The headers of a request for a service, rewritten in place: the caller's identity as Tether authenticated it. */
export function serviceHeaders(
  headers: IncomingMessage["headers"],
  caller: AuthenticatedCaller,
  cluster: string,
  peer: string | undefined,
): void {
  for (const name of String(headers.connection ?? "").split(",")) {
    const token = name.trim().toLowerCase();
    if (token) delete headers[token];
  }
  for (const name of HOP_BY_HOP) delete headers[name];
  for (const name of Object.keys(headers)) if (DROPPED.test(name)) delete headers[name];
  if (peer) headers["x-forwarded-for"] = peer;
  headers[SERVICE_USER_HEADER] = identityHeaderValue(caller.user);
  if (caller.groups.length > 0)
    (headers as Record<string, string | string[]>)[SERVICE_GROUP_HEADER] =
      caller.groups.map(identityHeaderValue);
  headers[SERVICE_CLUSTER_HEADER] = cluster;
}

type Admission =
  | {
      ok: true;
      caller: AuthenticatedCaller;
      cluster: Frozen<ClusterRecord>;
      entry: AgentSession;
      service: string;
      path: string;
      release: () => void;
    }
  | {
      ok: false;
      reason: StatusReason;
      why: RefusalReason;
      message: string;
      retryAfterSeconds?: number;
      caller?: AuthenticatedCaller;
    };

export class ServiceProxy {
  /** Keep-alive pools of tunnel streams, per session and service. */
  private readonly pools = new WeakMap<AgentSession, Map<string, HttpAgent>>();

  constructor(private readonly deps: ClusterProxyDeps) {}

  private pool(entry: AgentSession, service: string): HttpAgent {
    let byService = this.pools.get(entry);
    if (!byService) {
      const created = new Map<string, HttpAgent>();
      byService = created;
      this.pools.set(entry, created);
      entry.session.once("close", () => {
        for (const agent of created.values()) agent.destroy();
      });
    }
    let agent = byService.get(service);
    if (!agent) {
      agent = new HttpAgent({ keepAlive: true, maxFreeSockets: 8, scheduling: "lifo" });
      (agent as unknown as { createConnection: () => Duplex }).createConnection = () =>
        entry.session.open(exposedServiceStream(service));
      byService.set(service, agent);
    }
    return agent;
  }

  private async admit(req: IncomingMessage): Promise<Admission> {
    const m = SERVICE_URL.exec(req.url ?? "");
    const name = m?.[1] ?? "";
    const service = m?.[2] ?? "";
    const refuse = (
      reason: StatusReason,
      why: RefusalReason,
      message: string,
      caller?: AuthenticatedCaller,
    ) => ({ ok: false, reason, why, message, ...(caller ? { caller } : {}) }) as const;
    if (!isValidClusterName(name))
      return refuse("NotFound", "not_found", `"${name}" is not a valid cluster name`);
    if (!isExposedServiceName(service))
      return refuse(
        "NotFound",
        "not_found",
        `/clusters/${name}/services/ needs a service name, a DNS label of at most 55 characters`,
      );
    // On the path as the caller sent it: the agent too refuses dot segments, however encoded.
    const refusal = servicePathRefusal(m?.[3] || "/");
    if (refusal) return refuse("BadRequest", "bad_request", `the request path ${refusal}`);
    const cluster = await this.deps.store.getCluster(name);
    if (!cluster)
      return refuse(
        "NotFound",
        "not_found",
        `cluster "${name}" is not registered with this Tether server (tether-server cluster list shows those that are)`,
      );
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
      this.deps.metrics?.authFailure("proxy", "invalid_credential");
      if (attempt.failed())
        this.deps.log.warn({ source }, "too many failed authentications: the source address must wait");
      return refuse("Unauthorized", "unauthorized", await this.unauthenticated(req));
    }
    attempt.succeeded();
    if (!mayUseService(caller, cluster, service))
      return refuse(
        "Forbidden",
        "forbidden",
        `user "${caller.user}" may not use service "${service}" of cluster "${name}" through Tether`,
        caller,
      );
    const entry = this.deps.sessions.get(name);
    if (!entry)
      return refuse(
        "ServiceUnavailable",
        "no_agent",
        `cluster "${name}" has no connected Tether agent; check the agent's logs in that cluster`,
        caller,
      );
    const release = this.deps.quota.acquire(name, callerKey(req, caller));
    if (!release) {
      return {
        ok: false,
        reason: "TooManyRequests",
        why: "caller_quota",
        message: `you hold ${this.deps.quota.max} requests and connections on cluster "${name}" already: close some and retry`,
        retryAfterSeconds: 1,
        caller,
      };
    }
    return { ok: true, caller, cluster, entry, service, path: (m?.[3] || "/") + (m?.[4] ?? ""), release };
  }

  /** The 401's message: an expired token is told so, any other what a service takes. */
  private unauthenticated(req: IncomingMessage): Promise<string> {
    const sources = this.deps.identity ?? {};
    const more =
      sources.oidc || sources.serviceAccounts ? " (or an OIDC ID token or host service-account token)" : "";
    return unauthenticatedMessage(
      req,
      this.deps.store,
      `an exposed service needs a Tether token or a Tether client certificate${more}, whatever the cluster's auth mode`,
    );
  }

  async handleRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const audit = this.deps.audit?.request(req, res);
    if (audit) audit.service = serviceNamed(req.url);
    const admission = await this.admit(req);
    if (!admission.ok) {
      this.deps.metrics?.refused(admission.why);
      audit?.refused(admission.reason, admission.message, admission.caller);
      // Limits' refusals at debug level: a flood of them must not flood the log.
      const fields = { reason: admission.reason, service: audit?.service ?? serviceNamed(req.url) };
      if (admission.reason === "TooManyRequests") this.deps.log.debug(fields, "refused a service request");
      else this.deps.log.info(fields, "refused a service request");
      sendStatus(res, admission.reason, admission.message, admission.retryAfterSeconds);
      return;
    }
    const { caller, cluster, entry, service, path } = admission;
    releaseOnClose(req.socket, admission.release);
    releaseOnClose(res, () => {
      req.socket.off("close", admission.release);
      admission.release();
    });
    // A revoked or expired credential's long poll or event stream ends here too (live-credentials.ts).
    if (this.deps.live)
      releaseOnClose(
        res,
        this.deps.live.hold(caller, () => res.destroy()),
      );
    audit?.admitted(entry.cluster, cluster.auth, caller);
    serviceHeaders(req.headers, caller, entry.cluster, req.socket.remoteAddress);
    req.url = path;
    forwardRaw({
      req,
      res,
      path,
      headers: req.headers,
      agent: this.pool(entry, service),
      answered: (status, body) => this.deps.audit?.response(req, status, body),
      failure: (err) => {
        const full = sessionFullStatus(err, entry.cluster);
        if (full) {
          this.deps.metrics?.refusedFull(err);
          sendStatus(res, full.reason, full.message, full.retryAfterSeconds);
        } else if (isTetherError(err) && err.resetCode === ResetCode.REFUSED) {
          sendStatus(
            res,
            "BadGateway",
            `the Tether agent of cluster "${entry.cluster}" refused service "${service}": it does not expose it (start the agent with --expose ${service}=URL)`,
          );
        } else if (!res.headersSent) {
          this.deps.log.warn(
            { cluster: entry.cluster, service, err: err.message },
            "forwarding to an exposed service failed",
          );
          const gone = entry.session.closed || entry.session.goingAway;
          sendStatus(
            res,
            gone ? "ServiceUnavailable" : "BadGateway",
            gone
              ? `the Tether agent of cluster "${entry.cluster}" disconnected during the request`
              : `forwarding to service "${service}" of cluster "${entry.cluster}" failed: ${err.message}`,
          );
        } else {
          res.destroy();
        }
      },
    });
  }

  /** Exposed services take plain requests only: nothing long-lived and opaque goes to a service. */
  handleUpgrade(req: IncomingMessage, socket: Duplex): void {
    const audit = this.deps.audit?.upgrade(req, socket);
    if (audit) audit.service = serviceNamed(req.url);
    const message =
      "an exposed service takes plain HTTP requests only: upgrades (WebSocket, SPDY) are refused";
    this.deps.metrics?.refused("bad_request");
    audit?.refused("BadRequest", message);
    const answer = statusResponseHead("BadRequest", message);
    closeWith(socket, audit?.tagged(answer) ?? answer);
  }
}
