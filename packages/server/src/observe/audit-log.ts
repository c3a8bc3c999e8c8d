// The audit log: one JSON line per request a caller makes through Tether to a
// member (refused ones too), a start and an end line per exec, attach or
// port-forward, and a line per join, certificate renewal and admin API call
// (docs/audit.md has the schema). What the request is about comes from
// request-info.ts, in the vocabulary of Kubernetes audit and RBAC. Nothing a
// caller sends is copied but its path and user agent: no body, no header
// value, no query string (which carries exec commands and, for some clients,
// tokens).
//
// Cheap by design, for a busy GET loop: per request one UUID, one WeakMap
// entry, one requestInfo, one JSON.stringify and one buffered write, all after
// the response.
import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { performance } from "node:perf_hooks";
import type { Duplex, Readable } from "node:stream";
import { type StatusReason, statusCodeOf } from "@tether/common";
import { ADMIN_API_PREFIX } from "../admin/admin-api.js";
import { responseCut } from "../http/connection-headers.js";
import { isValidClusterName } from "../pki/pki.js";
import type { AuthenticatedCaller } from "../proxy/authenticate.js";
import { CLUSTER_PATH } from "../proxy/cluster-proxy.js";
import { requestInfo } from "../proxy/request-info.js";
import type { UpgradeAudit } from "../proxy/upgrade-relay.js";
import type { AuthMode } from "../store/state-store.js";
import type { AuditSink } from "./audit-file.js";

/** Sent back on every audited response, so that an operator can find the caller's line. */
export const REQUEST_ID_HEADER = "X-Tether-Request-Id";

/** Longest path, user agent or message copied into a line. */
const MAX_FIELD = 256;

const cap = (text: string | undefined): string | undefined =>
  text === undefined || text.length <= MAX_FIELD ? text : `${text.slice(0, MAX_FIELD)}…`;

const ms = (since: number): number => Math.round((performance.now() - since) * 1000) / 1000;

/** How the caller was identified: a Tether token or certificate, the member's own credential, or not at all. */
export type AuditAuth = "token" | "certificate" | "service-account" | "oidc" | "passthrough" | "none";

export class AuditLog {
  /** Records of proxied requests, for the member's response to find. */
  private readonly requests = new WeakMap<IncomingMessage, AuditedRequest>();
  /** What the join and admin endpoints learn of a request (its cluster, ...). */
  private readonly notes = new WeakMap<IncomingMessage, Record<string, unknown>>();

  constructor(private readonly sink: AuditSink) {}

  /** Writes one event; `time` first, fields that are undefined left out. */
  write(event: Record<string, unknown>): void {
    this.sink.write(`${JSON.stringify({ time: new Date().toISOString(), ...event })}\n`);
  }

  reopen(): void {
    this.sink.reopen();
  }

  close(): Promise<void> {
    return this.sink.close();
  }

  /** A plain request to /clusters/...: its line is written when the response closes. */
  request(req: IncomingMessage, res: ServerResponse): AuditedRequest {
    const record = new AuditedRequest(this, req, "request");
    this.requests.set(req, record);
    res.setHeader(REQUEST_ID_HEADER, record.id);
    res.once("close", () => record.end(res.headersSent ? res.statusCode : 0, res));
    return record;
  }

  /** The member's response to a forwarded plain request: its body bytes are counted. */
  response(req: IncomingMessage, status: number, body: Readable): void {
    this.requests.get(req)?.answered(status, body);
  }

  /** An upgrade request to /clusters/...: lines when it switches protocols and when the caller's connection closes. */
  upgrade(req: IncomingMessage, socket: Duplex): AuditedRequest {
    const record = new AuditedRequest(this, req, "upgrade");
    socket.once("close", () => record.end(record.code));
    return record;
  }

  /** A join or admin API request: its line is written when the response closes. */
  endpoint(req: IncomingMessage, res: ServerResponse, kind: "join" | "admin"): void {
    const id = randomUUID();
    const started = performance.now();
    // Read now: an h2 request's socket is its stream's session, gone once the stream closes.
    const sourceAddress = req.socket.remoteAddress;
    res.setHeader(REQUEST_ID_HEADER, id);
    res.once("close", () => {
      const path = (req.url ?? "").split(/[?#]/, 1)[0]!;
      this.write({
        kind,
        stage: "complete",
        requestId: id,
        ...(kind === "admin" ? adminAction(req.method ?? "", path) : {}),
        ...this.notes.get(req),
        sourceAddress,
        userAgent: cap(req.headers["user-agent"]),
        method: req.method,
        path: cap(path),
        code: res.headersSent ? res.statusCode : 0,
        durationMs: ms(started),
      });
    });
  }

  /** Adds fields to the line of a join or admin request (the cluster named in its body, the serial issued, ...). */
  note(req: IncomingMessage, fields: Record<string, unknown>): void {
    this.notes.set(req, { ...this.notes.get(req), ...fields });
  }

  /** An agent's tunnel: accepted, closed, or refused (with what the certificate named, if anything). */
  agent(
    stage: "connected" | "disconnected" | "refused",
    fields: {
      remoteAddress: string;
      cluster?: string;
      serial?: string;
      agentVersion?: string;
      message?: string;
    },
  ): void {
    const { remoteAddress, message, agentVersion, ...rest } = fields;
    this.write({
      kind: "agent",
      stage,
      ...rest,
      sourceAddress: remoteAddress,
      ...(agentVersion === undefined ? {} : { agentVersion: cap(agentVersion) }),
      ...(message === undefined ? {} : { message: cap(message) }),
    });
  }

  /** A certificate renewal over an agent's tunnel. */
  renewal(
    agent: { cluster: string; remoteAddress: string },
    outcome: "issued" | "refused" | "reset",
    fields: { serial?: string; notAfter?: string; message?: string } = {},
  ): void {
    this.write({
      kind: "renewal",
      stage: "complete",
      outcome,
      cluster: agent.cluster,
      sourceAddress: agent.remoteAddress,
      ...fields,
      ...(fields.message === undefined ? {} : { message: cap(fields.message) }),
    });
  }
}

/** The action of an admin API call and the cluster it names, from its method and path (the routes of admin-api.ts). */
function adminAction(method: string, path: string): { action: string; cluster?: string } {
  const parts = path.slice(ADMIN_API_PREFIX.length).split("/");
  const [collection, segment, sub] = parts;
  const route =
    parts.length === 1 && collection !== "clusters"
      ? collection
      : collection !== "clusters" || (parts.length > 3 && !(parts.length === 4 && sub === "services"))
        ? "?"
        : ["clusters", "NAME", sub, "SERVICE"].slice(0, parts.length).join("/");
  let cluster: string | undefined;
  try {
    cluster = segment === undefined ? undefined : decodeURIComponent(segment);
  } catch {}
  return {
    action: ADMIN_ACTIONS[`${method} ${route}`] ?? "unknown",
    ...(isValidClusterName(cluster) ? { cluster } : {}),
  };
}

const ADMIN_ACTIONS: Record<string, string> = {
  "GET clusters": "cluster.list",
  "POST clusters": "cluster.add",
  "DELETE clusters/NAME": "cluster.remove",
  "POST clusters/NAME/join-tokens": "join-token.create",
  "POST clusters/NAME/user-tokens": "user-token.create",
  "POST clusters/NAME/services/SERVICE": "service.allow",
  "DELETE clusters/NAME/services/SERVICE": "service.remove",
  "GET tokens": "token.list",
  "POST token-revocations": "token.revoke",
};

/** One request (or upgrade) to a member, from arrival to the close of its response or connection. */
export class AuditedRequest implements UpgradeAudit {
  readonly id = randomUUID();
  /** The status answered: Tether's refusal, the member's, or 0 for none yet. */
  code = 0;
  private readonly started = performance.now();
  /** The URL as it arrived (the proxy rewrites req.url to the member path). */
  private readonly url: string;
  private cluster: string | undefined;
  /** The exposed service the request is for (proxy/service-proxy.ts), if any. */
  service: string | undefined;
  private mode: AuthMode | undefined;
  private caller: AuthenticatedCaller | undefined;
  /** The identity the member let the caller act as (its own --as), as forwarded. */
  private acting: { user: string; groups: string[] } | undefined;
  private refusal: { reason: StatusReason; message: string } | undefined;
  private proxied = false;
  private bytesIn = 0;
  private bytesOut = 0;
  private switchedAt: number | undefined;
  private ended = false;
  /** Read at the start: an h2 request's socket is its stream's session, gone once the stream closes. */
  private readonly sourceAddress: string | undefined;

  constructor(
    private readonly log: AuditLog,
    private readonly req: IncomingMessage,
    private readonly kind: "request" | "upgrade",
  ) {
    this.url = req.url ?? "";
    this.sourceAddress = req.socket.remoteAddress;
  }

  get headerLine(): string {
    return `${REQUEST_ID_HEADER}: ${this.id}\r\n`;
  }

  /** A raw HTTP answer (a refused upgrade's) with the request id after its status line. */
  tagged(answer: string): string {
    const at = answer.indexOf("\r\n") + 2;
    return answer.slice(0, at) + this.headerLine + answer.slice(at);
  }

  /** Tether refused the request before forwarding it; `caller` when it was authenticated (a 403). */
  refused(reason: StatusReason, message: string, caller?: AuthenticatedCaller): void {
    this.refusal = { reason, message };
    this.code = statusCodeOf(reason);
    this.caller = caller;
  }

  /** Tether admitted the request: from here on its body is counted as it is forwarded. */
  admitted(
    cluster: string,
    mode: AuthMode,
    caller: AuthenticatedCaller | undefined,
    acting?: { user: string; groups: string[] },
  ): void {
    this.cluster = cluster;
    this.mode = mode;
    this.caller = caller;
    this.acting = acting;
    // Only now: a listener added earlier would let the body flow before the proxy pipes it.
    if (this.kind === "request") this.req.on("data", (chunk: Buffer) => (this.bytesIn += chunk.length));
  }

  /** The answer to the caller (the member's, or Tether's after a forwarding failure); `body` is counted. */
  answered(code: number, body?: Readable): void {
    this.code = code;
    if (!body) return;
    this.proxied = true;
    body.on("data", (chunk: Buffer) => (this.bytesOut += chunk.length));
  }

  /** The member switched protocols: the start line, then the bytes of both directions are counted. */
  switched(socket: Duplex, stream: Duplex, headBytesIn: number, headBytesOut: number): void {
    this.code = 101;
    this.switchedAt = performance.now();
    this.bytesIn = headBytesIn;
    this.bytesOut = headBytesOut;
    this.log.write(this.line("start", 101));
    socket.on("data", (chunk: Buffer) => (this.bytesIn += chunk.length));
    stream.on("data", (chunk: Buffer) => (this.bytesOut += chunk.length));
  }

  /** The response or connection closed: the request's last line. */
  end(code: number, res?: ServerResponse): void {
    if (this.ended) return;
    this.ended = true;
    if (!this.proxied && res) this.bytesOut = Number(res.getHeader("content-length")) || 0;
    const stage = this.refusal ? "refused" : this.switchedAt === undefined ? "complete" : "end";
    this.log.write(this.line(stage, code, res));
  }

  private line(stage: string, code: number, res?: ServerResponse): Record<string, unknown> {
    const m = CLUSTER_PATH.exec(this.url);
    const info = requestInfo(this.req.method ?? "GET", (m?.[2] || "/") + (m?.[3] ?? ""));
    const named = m?.[1];
    const validName = isValidClusterName(named);
    const caller = this.caller;
    const auth: AuditAuth = caller ? caller.via : this.mode === "passthrough" ? "passthrough" : "none";
    return {
      kind: this.kind,
      stage,
      requestId: this.id,
      cluster: this.cluster ?? (validName ? named : undefined),
      ...(this.service ? { service: this.service } : {}),
      auth,
      user: caller?.user,
      groups: caller?.groups,
      impersonatedUser: this.acting?.user,
      impersonatedGroups: this.acting?.groups,
      sourceAddress: this.sourceAddress,
      userAgent: cap(this.req.headers["user-agent"]),
      verb: info.verb,
      apiGroup: info.apiGroup,
      apiVersion: info.apiVersion,
      resource: info.resource,
      subresource: info.subresource,
      namespace: info.namespace,
      name: info.name,
      path: cap(info.path),
      code,
      // The message of a refused invalid cluster name quotes whatever the caller put in the path.
      ...(this.refusal
        ? { reason: this.refusal.reason, ...(validName ? { message: cap(this.refusal.message) } : {}) }
        : {}),
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      durationMs: ms(stage === "end" ? this.switchedAt! : this.started),
      // A response cut before its end: a watch or logs -f the caller stopped, or a failure.
      ...(res && responseCut(res) ? { complete: false } : {}),
    };
  }
}
