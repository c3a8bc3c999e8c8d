// Who is calling: a Tether-issued bearer token or a user certificate from
// Tether's CA (verified by the TLS handshake); with identity sources
// configured, also a host-cluster service-account token or an OIDC ID token
// (identity/identity-sources.ts routes those). Cluster certificates are agent
// identities and never authenticate a host caller.
import { createHash } from "node:crypto";
import type { IncomingMessage } from "node:http";
import type { TLSSocket } from "node:tls";
import { identityFromPeerCertificate } from "../pki/identity.js";
import { decodeJwt } from "jose";
import { bearerToken, hashToken, TOKEN_PREFIX, tokenId } from "../pki/tokens.js";
import type { Frozen } from "../store/records.js";
import type { ClusterRecord, Store } from "../store/state-store.js";
import type { Caller } from "./forwarded-headers.js";
import { externalCaller, type IdentitySources } from "./identity/identity-sources.js";

export interface AuthenticatedCaller extends Caller {
  via: "token" | "certificate" | "service-account" | "oidc";
  /** Clusters a Tether token is scoped to ("*" for all); undefined for every other credential. */
  clusters?: string[];
  /** When the credential stops working; streams it opened are closed then (live-credentials.ts). */
  expiresAt?: Date;
  /**
   * Names the credential for revocation: `token:<token id>`, `cert:<serial>`,
   * or `ext:<sha-256 of the token>` for an OIDC or service-account token.
   */
  credentialId?: string;
  /**
   * Asks again whether the credential still works (a host service-account
   * token: its account or Secret may be gone); false ends what it holds.
   * Never sent across the replica hop: the first replica holds the streams.
   */
  stillValid?: () => Promise<boolean>;
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
    if (!token.startsWith(TOKEN_PREFIX)) {
      const external = await externalCaller(token, sources);
      if (!external) return undefined;
      // Its expiry ends the streams it opened, as a Tether token's does; a service-account token's
      // streams also end when the host stops accepting it (live-credentials.ts asks again).
      const { expiresAt, ...caller } = external;
      const reviewer = sources.serviceAccounts;
      return {
        ...caller,
        ...(expiresAt ? { expiresAt: new Date(expiresAt) } : {}),
        credentialId: EXTERNAL_CREDENTIAL + createHash("sha256").update(token, "utf8").digest("hex"),
        ...(caller.via === "service-account" && reviewer
          ? { stillValid: () => reviewer.stillAccepted(token) }
          : {}),
      };
    }
    const record = await store.findToken(hashToken(token));
    if (record?.kind !== "user" || !record.user) return undefined;
    return {
      user: record.user,
      groups: record.groups === undefined ? [] : [...record.groups],
      via: "token",
      clusters: record.clusters === undefined ? [] : [...record.clusters],
      expiresAt: new Date(record.expiresAt),
      credentialId: TOKEN_CREDENTIAL + tokenId(record.hash),
    };
  }
  const socket = req.socket as TLSSocket;
  if (typeof socket.getPeerCertificate !== "function" || !socket.authorized) return undefined;
  const peer = socket.getPeerCertificate(true);
  const identity = identityFromPeerCertificate(peer);
  if (identity?.kind !== "user") return undefined;
  // The handshake checked the validity period once; a kept-alive connection outlives it.
  const notAfter = Date.parse(peer.valid_to);
  if (!(notAfter > Date.now())) return undefined;
  if (await store.isRevoked(identity.serial)) return undefined;
  return {
    user: identity.user,
    groups: identity.groups,
    via: "certificate",
    expiresAt: new Date(notAfter),
    credentialId: CERT_CREDENTIAL + identity.serial,
  };
}

export const TOKEN_CREDENTIAL = "token:";
export const CERT_CREDENTIAL = "cert:";
export const EXTERNAL_CREDENTIAL = "ext:";

/**
 * Why a request that authenticate() refused was refused, when that helps the
 * caller: a Tether user token that expired says so and how to get a new one.
 */
export async function unauthenticatedMessage(
  req: IncomingMessage,
  store: Store,
  /** What to say when no credential expired: what the endpoint takes. */
  otherwise = "Tether could not authenticate you: send a Tether token (tether-server kubeconfig NAME --user U prints a kubeconfig with one) or a Tether client certificate",
): Promise<string> {
  const token = bearerToken(req.headers.authorization);
  const record = token ? await store.findToken(hashToken(token), { includeExpired: true }) : undefined;
  if (record?.kind === "user" && !(Date.parse(record.expiresAt) > Date.now())) {
    const cluster = record.clusters?.find((c) => c !== "*") ?? "NAME";
    return (
      `your Tether token expired at ${record.expiresAt}: ask an admin for a new one ` +
      `(tether-server kubeconfig ${cluster} --user ${record.user} prints a kubeconfig with one)`
    );
  }
  const expired = token && !token.startsWith(TOKEN_PREFIX) ? expiredJwtAt(token) : undefined;
  if (expired) {
    return (
      `your bearer token (an OIDC ID token or a service-account token) expired at ${expired}: ` +
      "get a new one (kubectl's exec credential plugin, e.g. kubelogin, refreshes it when run again; " +
      "a projected service-account token is renewed by the kubelet; kubectl create token prints a new one)"
    );
  }
  return otherwise;
}

/** When a JWT's (unverified) exp has passed, that time; only ever used to word a refusal. */
function expiredJwtAt(token: string): string | undefined {
  try {
    const { exp } = decodeJwt(token);
    return typeof exp === "number" && exp * 1000 <= Date.now()
      ? new Date(exp * 1000).toISOString()
      : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether a caller may use a cluster. A token reaches only the clusters it is
 * scoped to; a cluster's allowed users and groups narrow that further (when
 * the cluster lists any, the caller must be one of them or in one of them) and
 * never widen it. Every other credential (user certificate, host service
 * account, OIDC) carries no scope: the allowed users and groups are what it
 * may reach, so it reaches no cluster that lists none.
 */
export function mayUseCluster(caller: AuthenticatedCaller, cluster: Frozen<ClusterRecord>): boolean {
  const listed =
    cluster.allowedUsers.includes(caller.user) ||
    caller.groups.some((g) => cluster.allowedGroups.includes(g));
  if (caller.via !== "token") return listed;
  const scope = caller.clusters ?? [];
  if (!scope.includes("*") && !scope.includes(cluster.name)) return false;
  return listed || (cluster.allowedUsers.length === 0 && cluster.allowedGroups.length === 0);
}
