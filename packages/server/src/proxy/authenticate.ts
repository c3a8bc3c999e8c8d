// Who is calling: a Tether-issued bearer token or a user certificate from
// Tether's CA (verified by the TLS handshake); with identity sources
// configured, also a host-cluster service-account token or an OIDC ID token
// (identity/identity-sources.ts routes those). Cluster certificates are agent
// identities and never authenticate a host caller.
import type { IncomingMessage } from "node:http";
import type { TLSSocket } from "node:tls";
import { identityFromPeerCertificate } from "../pki/identity.js";
import { bearerToken, hashToken, TOKEN_PREFIX } from "../pki/tokens.js";
import type { ClusterRecord, Store } from "../store/state-store.js";
import type { Caller } from "./forwarded-headers.js";
import { externalCaller, type IdentitySources } from "./identity/identity-sources.js";

export interface AuthenticatedCaller extends Caller {
  via: "token" | "certificate" | "service-account" | "oidc";
  /** Clusters a Tether token is scoped to ("*" for all); undefined for every other credential. */
  clusters?: string[];
  /** When the credential stops being valid, where its source says. */
  expiresAt?: string;
}

export async function authenticate(
  req: IncomingMessage,
  store: Store,
  sources: IdentitySources = {},
): Promise<AuthenticatedCaller | undefined> {
  const auth = req.headers.authorization;
  if (auth) {
    const token = bearerToken(auth);
    if (!token) return undefined;
    if (!token.startsWith(TOKEN_PREFIX)) return externalCaller(token, sources);
    const record = await store.findToken(hashToken(token));
    if (record?.kind !== "user" || !record.user) return undefined;
    return {
      user: record.user,
      groups: record.groups ?? [],
      via: "token",
      clusters: record.clusters ?? [],
      ...(record.expiresAt ? { expiresAt: record.expiresAt } : {}),
    };
  }
  const socket = req.socket as TLSSocket;
  if (typeof socket.getPeerCertificate !== "function" || !socket.authorized) return undefined;
  const identity = identityFromPeerCertificate(socket.getPeerCertificate(true));
  if (identity?.kind !== "user") return undefined;
  if (await store.isRevoked(identity.serial)) return undefined;
  return { user: identity.user, groups: identity.groups, via: "certificate" };
}

/**
 * Whether a caller may use a cluster. A token reaches only the clusters it is
 * scoped to; a cluster's allowed users and groups narrow that further (when
 * the cluster lists any, the caller must be one of them or in one of them) and
 * never widen it. Every other credential (user certificate, host service
 * account, OIDC) carries no scope: the allowed users and groups are what it
 * may reach, so it reaches no cluster that lists none.
 */
export function mayUseCluster(caller: AuthenticatedCaller, cluster: ClusterRecord): boolean {
  const listed =
    cluster.allowedUsers.includes(caller.user) ||
    caller.groups.some((g) => cluster.allowedGroups.includes(g));
  if (caller.via !== "token") return listed;
  const scope = caller.clusters ?? [];
  if (!scope.includes("*") && !scope.includes(cluster.name)) return false;
  return listed || (cluster.allowedUsers.length === 0 && cluster.allowedGroups.length === 0);
}
