// Who is calling: a Tether-issued bearer token or a user certificate from
// Tether's CA (verified by the TLS handshake). Cluster certificates are agent
// identities and never authenticate a host caller.
import type { IncomingMessage } from "node:http";
import type { TLSSocket } from "node:tls";
import type { Caller } from "./forwarded-headers.js";
import { identityFromPeerCertificate } from "./identity.js";
import type { ClusterRecord, Store } from "./state-store.js";
import { hashToken } from "./tokens.js";

export interface AuthenticatedCaller extends Caller {
  via: "token" | "certificate";
  /** Clusters a token is scoped to ("*" for all); undefined for certificates. */
  clusters?: string[];
}

const BEARER = /^Bearer\s+(\S+)\s*$/i;

export async function authenticate(
  req: IncomingMessage,
  store: Store,
): Promise<AuthenticatedCaller | undefined> {
  const auth = req.headers.authorization;
  if (auth) {
    const token = BEARER.exec(auth)?.[1];
    if (!token) return undefined;
    const record = await store.findToken(hashToken(token));
    if (record?.kind !== "user" || !record.user) return undefined;
    return { user: record.user, groups: record.groups ?? [], via: "token", clusters: record.clusters ?? [] };
  }
  const socket = req.socket as TLSSocket;
  if (typeof socket.getPeerCertificate !== "function" || !socket.authorized) return undefined;
  const identity = identityFromPeerCertificate(socket.getPeerCertificate(true));
  if (identity?.kind !== "user") return undefined;
  if (await store.isRevoked(identity.serial)) return undefined;
  return { user: identity.user, groups: identity.groups, via: "certificate" };
}

/** A caller may use a cluster its token is scoped to, or one that lists the caller or a group of theirs. */
export function mayUseCluster(caller: AuthenticatedCaller, cluster: ClusterRecord): boolean {
  if (caller.clusters?.includes("*") || caller.clusters?.includes(cluster.name)) return true;
  if (cluster.allowedUsers.includes(caller.user)) return true;
  return caller.groups.some((g) => cluster.allowedGroups.includes(g));
}
