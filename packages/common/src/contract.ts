// The wire contract between tether-server and tether-agent: where the agent
// dials, what it may open, and the JSON it exchanges when it joins and renews.
// Both sides import these names, so renaming a path or a field fails to compile
// on both at once.

/** Where agents open their tunnel (a WebSocket upgrade over mutual TLS). */
export const AGENT_PATH = "/agent/v1/connect";
/** The agent's version, sent with the tunnel upgrade, for the cluster's status. */
export const AGENT_VERSION_HEADER = "x-tether-agent-version";
/** What the agent can do beyond the first release, comma-separated, sent with the tunnel upgrade (e.g. HEAD_FEATURE). */
export const AGENT_FEATURES_HEADER = "x-tether-agent-features";
/**
 * A random id per agent process, sent with the tunnel upgrade: a session from
 * the same instance replaces its previous one, another instance's (a second
 * agent replica of the member) is kept beside it.
 */
export const AGENT_INSTANCE_HEADER = "x-tether-agent-instance";

/** GET: Tether's CA certificate (public; the agent pins its hash before sending anything secret). */
export const JOIN_CA_PATH = "/join/v1/ca";
/** POST a {@link JoinRequest} with a one-time join token; answered with {@link IssuedForAgent}. */
export const JOIN_CERTIFICATE_PATH = "/join/v1/certificate";

/** The one stream service an agent may open toward the server: certificate renewal. */
export const RENEW_SERVICE = "tether-renew";
/** The stream service under which an agent exposes its cluster's apiserver. */
export const KUBERNETES_SERVICE = "kubernetes";
/** Stream metadata key that says how the agent authenticates a request to the apiserver. */
export const AUTH_METADATA = "auth";

/**
 * How a member apiserver learns who the caller is.
 * impersonate — the server authenticates the caller and sets Impersonate-*; the agent adds its own credential.
 * passthrough — the caller's own Authorization goes through; the agent adds no credential of its own.
 */
export type AuthMode = "impersonate" | "passthrough";

export function isAuthMode(v: unknown): v is AuthMode {
  return v === "impersonate" || v === "passthrough";
}

/** Body of POST {@link JOIN_CERTIFICATE_PATH}. */
export interface JoinRequest {
  cluster: string;
  token: string;
  csr: string;
}

/** Body the agent writes on a {@link RENEW_SERVICE} stream. */
export interface RenewRequest {
  csr: string;
}

/** What a join or a renewal hands the agent. */
export interface IssuedForAgent {
  certificate: string;
  ca: string;
  notAfter: string;
  serial: string;
}

/** A refused renewal: the stream's whole answer. */
export interface RenewRefusal {
  error: string;
}

/** Largest join or renewal body either side accepts. */
export const MAX_JOIN_BODY = 64 * 1024;

/**
 * Stream services for in-cluster services an agent exposes (tether-agent
 * --expose NAME=URL) are this prefix and the NAME; the agent opens nothing
 * else it was not told to.
 */
export const EXPOSED_SERVICE_PREFIX = "service:";
/** An exposed service's NAME: a DNS label short enough that its stream service fits the tunnel's 63 characters. */
const EXPOSED_NAME = /^[a-z0-9]([-a-z0-9]{0,53}[a-z0-9])?$/;

export function isExposedServiceName(name: string): boolean {
  return EXPOSED_NAME.test(name);
}

export function exposedServiceStream(name: string): string {
  return EXPOSED_SERVICE_PREFIX + name;
}

/**
 * Headers naming the caller to an exposed service. The server removes any a
 * caller sends and sets them from the identity it authenticated; the values
 * are the names percent-encoded (decodeURIComponent gives them back), so that
 * any name fits a header.
 */
export const SERVICE_USER_HEADER = "x-tether-user";
/** One per group of the caller. */
export const SERVICE_GROUP_HEADER = "x-tether-group";
export const SERVICE_CLUSTER_HEADER = "x-tether-cluster";

/**
 * A name as an identity header carries it: printable ASCII as is; "%", ","
 * and ";" percent-encoded, so a service that splits a header on commas (or
 * joins repeated ones with them) never sees group "x, admins" as an
 * "admins"; spaces at either end encoded, which HTTP would trim; everything
 * else percent-encoded as UTF-8. A lone surrogate (which no UTF-8 can carry)
 * becomes U+FFFD.
 */
export function identityHeaderValue(name: string): string {
  return name
    .replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, "\uFFFD")
    .replace(/[^\x20-\x24\x26-\x2b\x2d-\x3a\x3c-\x7e]/gu, (c) => encodeURIComponent(c))
    .replace(/^ +| +$/g, (spaces) => "%20".repeat(spaces.length));
}
