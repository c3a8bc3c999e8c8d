// /clusters/<name>/… : admits a host caller to a member cluster and forwards
// the request through that cluster's tunnel. Plain requests go through
// http-proxy-3 over a pool of tunnel streams; upgrades (SPDY is a POST, so
// http-proxy would drop it) are relayed one per stream (upgrade-relay.ts).
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { createProxyServer } from "http-proxy-3";
import type { AgentSession, AgentSessions } from "./agent-sessions.js";
import { type AuthenticatedCaller, authenticate, mayUseCluster } from "./authenticate.js";
import { rewriteHeaders, rewriteRawHeaders } from "./forwarded-headers.js";
import { type StatusReason, sendStatus, statusResponseHead } from "./k8s-status.js";
import type { Logger } from "./logger.js";
import type { AuthMode, Store } from "./state-store.js";
import { checkUpgrade, relayUpgrade } from "./upgrade-relay.js";

export const CLUSTER_PATH = /^\/clusters\/([^/?#]*)(\/[^?#]*)?(\?.*)?$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const UNASKED_SWITCH = "the member switched protocols on a request that asked for no upgrade";

type Admission =
  | { ok: true; mode: AuthMode; caller?: AuthenticatedCaller; entry: AgentSession; path: string }
  | { ok: false; reason: StatusReason; message: string };

export interface ClusterProxyDeps {
  store: Store;
  sessions: AgentSessions;
  log: Logger;
}

export class ClusterProxy {
  private readonly proxy = createProxyServer({ xfwd: false, ws: false, proxyTimeout: 0, timeout: 0 });

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
    this.proxy.on("proxyRes", (proxyRes, _req, res) => {
      if (proxyRes.statusCode === 101) {
        proxyRes.destroy();
        sendStatus(res, "BadGateway", UNASKED_SWITCH);
        return;
      }
      process.nextTick(() => {
        if (!res.headersSent && !res.writableEnded) res.flushHeaders();
      });
    });
  }

  private async admit(req: IncomingMessage): Promise<Admission> {
    const m = CLUSTER_PATH.exec(req.url ?? "");
    const name = m?.[1] ?? "";
    if (!DNS_LABEL.test(name)) {
      return { ok: false, reason: "NotFound", message: `"${name}" is not a valid cluster name` };
    }
    const path = (m?.[2] || "/") + (m?.[3] ?? "");
    const cluster = await this.deps.store.getCluster(name);
    if (!cluster) {
      return {
        ok: false,
        reason: "NotFound",
        message: `cluster "${name}" is not registered with this Tether server (tether-server cluster list shows those that are)`,
      };
    }
    let caller: AuthenticatedCaller | undefined;
    if (cluster.auth === "impersonate") {
      caller = await authenticate(req, this.deps.store);
      if (!caller) {
        return {
          ok: false,
          reason: "Unauthorized",
          message:
            "Tether could not authenticate you: send a Tether token (tether-server kubeconfig NAME --user U prints a kubeconfig with one) or a Tether client certificate",
        };
      }
      if (!mayUseCluster(caller, cluster)) {
        return {
          ok: false,
          reason: "Forbidden",
          message: `user "${caller.user}" may not use cluster "${name}" through Tether`,
        };
      }
    } else if (!req.headers.authorization) {
      return {
        ok: false,
        reason: "Unauthorized",
        message: `cluster "${name}" uses passthrough authentication: send the member cluster's own bearer token`,
      };
    }
    const entry = this.deps.sessions.get(name);
    if (!entry) {
      return {
        ok: false,
        reason: "ServiceUnavailable",
        message: `cluster "${name}" has no connected Tether agent; check the agent's logs in that cluster`,
      };
    }
    return { ok: true, mode: cluster.auth, ...(caller ? { caller } : {}), entry, path };
  }

  async handleRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const admission = await this.admit(req);
    if (!admission.ok) {
      this.deps.log.info({ url: req.url, reason: admission.reason }, "refused");
      sendStatus(res, admission.reason, admission.message);
      return;
    }
    const { mode, caller, entry, path } = admission;
    rewriteHeaders(req.headers, mode, caller, req.socket.remoteAddress);
    req.url = path;
    this.proxy.web(req, res, { target: "http://apiserver.tether", agent: entry.httpAgent(mode) }, (err) => {
      this.deps.log.warn({ cluster: entry.cluster, err: err.message }, "forwarding failed");
      if (!res.headersSent) {
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
    const upgrade = checkUpgrade(req);
    if (!upgrade.ok) {
      this.deps.log.info({ url: req.url, reason: "BadRequest" }, "refused upgrade");
      socket.end(statusResponseHead("BadRequest", upgrade.message));
      return;
    }
    const admission = await this.admit(req);
    if (!admission.ok) {
      this.deps.log.info({ url: req.url, reason: admission.reason }, "refused upgrade");
      socket.end(statusResponseHead(admission.reason, admission.message));
      return;
    }
    const { mode, caller, entry, path } = admission;
    relayUpgrade({
      socket,
      head,
      method: req.method ?? "GET",
      path,
      headers: rewriteRawHeaders(req.rawHeaders, mode, caller, req.socket.remoteAddress),
      protocol: upgrade.protocol,
      open: () => entry.openStream(mode),
      failure: (err) => {
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
