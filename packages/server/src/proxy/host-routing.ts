// Host-based routing (--cluster-domain DOMAIN): a request for
// <name>.<DOMAIN> goes to member <name> at "/", for clients that drop the
// /clusters/<name> path prefix (kubectl proxy without --append-server-path).
// The TLS server name is looked at first, then the Host header: a kubeconfig
// with tls-server-name: <name>.<DOMAIN> needs no DNS and still sends the
// server's real address as Host. When both name a member and the members
// differ, the request is refused (421) rather than sent to either.
import type { IncomingMessage } from "node:http";
import type { TLSSocket } from "node:tls";
import { isValidClusterName } from "../pki/pki.js";

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export type HostRoute =
  | { kind: "none" }
  | { kind: "cluster"; cluster: string }
  | { kind: "misdirected"; message: string };

/** The member a host name designates under `domain`, if it is exactly <label>.<domain>. */
export function memberOfHost(host: string | undefined, domain: string): string | undefined {
  if (!host) return undefined;
  let name = host.toLowerCase();
  // Host may carry a port; an IPv6 literal is bracketed and is never a member name anyway.
  if (!name.startsWith("[")) name = name.replace(/:\d*$/, "");
  name = name.replace(/\.$/, "");
  const suffix = `.${domain}`;
  if (!name.endsWith(suffix)) return undefined;
  const label = name.slice(0, -suffix.length);
  return isValidClusterName(label) ? label : undefined;
}

/** Normalises a --cluster-domain value: lower case, no leading or trailing dot. */
export function normalizeClusterDomain(domain: string): string | undefined {
  const d = domain
    .trim()
    .toLowerCase()
    .replace(/^\.+|\.+$/g, "");
  const ok = d.split(".").every((l) => DNS_LABEL.test(l)) && d.includes(".") && d.length <= 200;
  return ok ? d : undefined;
}

/**
 * The member a request is for by its names. `ownHost` is the server's own
 * host name (--external-url): when it lies under the domain it still names
 * the server, so agents and joins reaching it are not taken for a member.
 */
export function hostRoute(req: IncomingMessage, domain: string | undefined, ownHost?: string): HostRoute {
  if (!domain) return { kind: "none" };
  const own = ownHost ? memberOfHost(ownHost, domain) : undefined;
  const member = (name: string | undefined) => {
    const m = memberOfHost(name, domain);
    return m === own ? undefined : m;
  };
  const sni = (req.socket as TLSSocket).servername || undefined;
  const bySni = member(sni);
  // HTTP/2 carries the host as :authority (Host only if the client adds it too).
  const host = req.headers.host ?? (req.headers[":authority"] as string | undefined);
  const byHost = member(host);
  if (bySni && byHost && bySni !== byHost) {
    return {
      kind: "misdirected",
      message: `this connection is for cluster "${bySni}" (TLS server name ${sni}) but the request is for "${byHost}" (Host ${host}): open a connection for ${byHost}.${domain}`,
    };
  }
  const cluster = bySni ?? byHost;
  return cluster ? { kind: "cluster", cluster } : { kind: "none" };
}

/**
 * Rewrites a host-routed request to the path form the cluster proxy reads
 * (/clusters/<name>/<path>); false when its target is not a path (absolute
 * form, "*"), which is refused.
 */
export function toClusterPath(req: IncomingMessage, cluster: string): boolean {
  const url = req.url ?? "";
  if (!url.startsWith("/")) return false;
  req.url = `/clusters/${cluster}${url}`;
  return true;
}

/**
 * A kubeconfig's cluster entry for a member: the path form without a domain,
 * else the server's own address with tls-server-name <name>.<domain>, which
 * works without DNS for the member names.
 */
export function kubeconfigServer(
  server: string,
  cluster: string,
  domain?: string,
): { server: string; "tls-server-name"?: string } {
  const base = server.replace(/\/+$/, "");
  return domain
    ? { server: base, "tls-server-name": `${cluster}.${domain}` }
    : { server: `${base}/clusters/${cluster}` };
}

/** A member's URL for clients that cannot set a TLS server name (KubeFed): https://<name>.<domain>:<port>, which needs DNS. */
export function memberUrl(server: string, cluster: string, domain?: string): string {
  if (!domain) return `${server.replace(/\/+$/, "")}/clusters/${cluster}`;
  const url = new URL(server);
  url.hostname = `${cluster}.${domain}`;
  return url.origin;
}
