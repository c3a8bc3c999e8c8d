// Validation of what operators type into the admin commands (and send to the
// admin API): durations, labels, identities, auth modes and server URLs. Every
// failure is a TetherCliError with a code and a one-line message that says
// what a valid value looks like.
import { isIP } from "node:net";
import { isAuthMode, isExposedServiceName, TetherError } from "@tether/common";
import type { AuthMode } from "../store/state-store.js";

export const ERR_TETHER_CLUSTER_EXISTS = "ERR_TETHER_CLUSTER_EXISTS";
export const ERR_TETHER_UNKNOWN_CLUSTER = "ERR_TETHER_UNKNOWN_CLUSTER";
export const ERR_TETHER_NO_SERVER_URL = "ERR_TETHER_NO_SERVER_URL";
export const ERR_TETHER_BAD_SERVER_URL = "ERR_TETHER_BAD_SERVER_URL";
export const ERR_TETHER_BAD_DURATION = "ERR_TETHER_BAD_DURATION";
export const ERR_TETHER_BAD_LABEL = "ERR_TETHER_BAD_LABEL";
export const ERR_TETHER_BAD_AUTH_MODE = "ERR_TETHER_BAD_AUTH_MODE";
export const ERR_TETHER_BAD_IDENTITY = "ERR_TETHER_BAD_IDENTITY";
export const ERR_TETHER_RESERVED_GROUP = "ERR_TETHER_RESERVED_GROUP";
export const ERR_TETHER_RESERVED_USER = "ERR_TETHER_RESERVED_USER";
export const ERR_TETHER_BAD_SERVICE_NAME = "ERR_TETHER_BAD_SERVICE_NAME";

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

export const DEFAULT_JOIN_TOKEN_TTL = "24h";
export const MAX_JOIN_TOKEN_TTL_MS = 30 * DAY;
export const DEFAULT_USER_TOKEN_TTL = "24h";
export const MAX_USER_TOKEN_TTL_MS = 365 * DAY;
/** KubeFed keeps using its token until someone replaces the Secret: longer than a person's, still bounded. */
export const DEFAULT_KUBEFED_TOKEN_TTL = "90d";

export class TetherCliError extends TetherError {
  constructor(code: string, message: string) {
    super(code, message);
    this.name = "TetherCliError";
  }
}

export const fail = (code: string, message: string): never => {
  throw new TetherCliError(code, message);
};

/** Quotes user input for an error message: JSON-escaped (so one line) and cut short. */
export const q = (s: string) => (s.length > 80 ? JSON.stringify(s.slice(0, 80)) + "…" : JSON.stringify(s));

// ---------------------------------------------------------------------------
// Parsing and validation

const UNITS: Record<string, number> = { s: SECOND, m: MINUTE, h: HOUR, d: DAY };

/**
 * Milliseconds of a duration like `90s`, `15m`, `24h`, `7d` or `1h30m` (whole
 * numbers, units s/m/h/d). Throws ERR_TETHER_BAD_DURATION otherwise.
 */
export function parseDuration(text: string): number {
  const s = String(text).trim();
  if (/^(\d{1,9}[smhd])+$/.test(s)) {
    let ms = 0;
    for (const m of s.matchAll(/(\d+)([smhd])/g)) ms += Number(m[1]) * UNITS[m[2]!]!;
    return ms;
  }
  return fail(
    ERR_TETHER_BAD_DURATION,
    `invalid duration ${q(s)}: use a whole number with a unit s, m, h or d, e.g. 90s, 15m, 24h, 7d (or 1h30m)`,
  );
}

/** A duration for `option`, which must be > 0 and at most `maxMs`. */
export function parseTtl(option: string, text: string, maxMs: number): number {
  return checkTtlMs(option, parseDuration(text), maxMs);
}

/** `ms` if it is a whole number of milliseconds > 0 and at most `maxMs`; ERR_TETHER_BAD_DURATION otherwise. */
export function checkTtlMs(option: string, ms: number, maxMs: number): number {
  if (!Number.isSafeInteger(ms) || ms <= 0) {
    const got = Number.isSafeInteger(ms) ? formatDuration(ms) : q(String(ms));
    fail(ERR_TETHER_BAD_DURATION, `${option} must be longer than 0, got ${got}`);
  }
  if (ms > maxMs) {
    fail(
      ERR_TETHER_BAD_DURATION,
      `${option} must be at most ${formatDuration(maxMs)}, got ${formatDuration(ms)}`,
    );
  }
  return ms;
}

/** `ms` in the largest unit that divides it: 30d, 24h, 90s. */
export function formatDuration(ms: number): string {
  for (const [unit, size] of [
    ["d", DAY],
    ["h", HOUR],
    ["m", MINUTE],
  ] as const) {
    if (ms % size === 0 && ms >= size) return `${ms / size}${unit}`;
  }
  return `${Math.round(ms / SECOND)}s`;
}

// Kubernetes label syntax: an optional DNS-subdomain prefix and "/", a name of
// at most 63 characters; values of at most 63 characters, possibly empty.
const LABEL_NAME_RE = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const DNS_SUBDOMAIN_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** `k=v` strings to a label map; Kubernetes label syntax; a key may be given once. */
export function parseLabels(items: string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const item of items) {
    const eq = item.indexOf("=");
    if (eq < 0) fail(ERR_TETHER_BAD_LABEL, `invalid label ${q(item)}: use key=value, e.g. --label region=eu`);
    const key = item.slice(0, eq);
    const value = item.slice(eq + 1);
    const slash = key.lastIndexOf("/");
    const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
    const name = slash >= 0 ? key.slice(slash + 1) : key;
    if (
      !LABEL_NAME_RE.test(name) ||
      (prefix !== undefined && (prefix.length > 253 || !DNS_SUBDOMAIN_RE.test(prefix)))
    ) {
      fail(
        ERR_TETHER_BAD_LABEL,
        `invalid label key ${q(key)}: a key is an optional DNS-subdomain prefix and "/", then up to 63 ` +
          `letters, digits, '-', '_' or '.', starting and ending with a letter or digit`,
      );
    }
    if (value !== "" && !LABEL_NAME_RE.test(value)) {
      fail(
        ERR_TETHER_BAD_LABEL,
        `invalid value for label ${q(key)}: a value is empty or up to 63 letters, digits, '-', '_' or '.', ` +
          `starting and ending with a letter or digit`,
      );
    }
    if (Object.hasOwn(labels, key)) fail(ERR_TETHER_BAD_LABEL, `label ${q(key)} is given more than once`);
    labels[key] = value;
  }
  return labels;
}

export function parseAuthMode(mode: string): AuthMode {
  if (isAuthMode(mode)) return mode;
  return fail(ERR_TETHER_BAD_AUTH_MODE, `invalid --auth ${q(mode)}: use impersonate or passthrough`);
}

/**
 * A user or group name for Tether identities: non-empty, at most 256
 * characters, no control characters (it ends up in HTTP headers), and not in
 * Kubernetes' reserved `system:` namespace. Tether prefixes identities with
 * `tether:` before they reach a member cluster, so a `system:` name could
 * never mean what it says: it is always a mistake.
 */
export function checkIdentity(kind: "user" | "group", name: string): string {
  if (name.length === 0 || name.length > 256 || /[\p{Cc}\p{Zl}\p{Zp}]/u.test(name) || name.trim() !== name) {
    fail(
      ERR_TETHER_BAD_IDENTITY,
      `invalid ${kind} name ${q(name)}: 1 to 256 characters, no control characters or surrounding spaces`,
    );
  }
  if (name.toLowerCase().startsWith("system:")) {
    fail(
      kind === "group" ? ERR_TETHER_RESERVED_GROUP : ERR_TETHER_RESERVED_USER,
      `${kind} name ${q(name)} is reserved: "system:" names belong to Kubernetes itself ` +
        `(Tether sends identities to member clusters prefixed with "tether:"); ` +
        `choose another name and bind it with RBAC in the member cluster`,
    );
  }
  return name;
}

export function uniqueIdentities(kind: "user" | "group", names: string[]): string[] {
  return [...new Set(names.map((n) => checkIdentity(kind, n)))];
}

/** The NAME of an exposed service (tether-agent --expose NAME=URL). */
export function checkServiceName(name: string): string {
  if (!isExposedServiceName(name)) {
    fail(
      ERR_TETHER_BAD_SERVICE_NAME,
      `invalid service name ${q(name)}: a lowercase DNS label of at most 55 characters, as the agent's --expose NAME=URL names it`,
    );
  }
  return name;
}

/** The only "system:" names a cluster may allow: a host service account's (serve --host-service-accounts). */
const SERVICE_ACCOUNT_NAME = {
  user: /^system:serviceaccount:[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?:[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?$/,
  group: /^system:serviceaccounts(:[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?$/,
};

/**
 * A cluster's allowed users or groups: what a Tether token may be issued for,
 * plus host service accounts and their namespace groups. Those stay
 * unissuable as Tether tokens, so only the host cluster can speak for them.
 */
export function uniqueAllowed(kind: "user" | "group", names: string[]): string[] {
  return [...new Set(names.map((n) => (SERVICE_ACCOUNT_NAME[kind].test(n) ? n : checkIdentity(kind, n))))];
}

/** An https URL without a trailing slash, query or fragment. */
export function normalizeServerUrl(text: string, from: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return fail(
      ERR_TETHER_BAD_SERVER_URL,
      `${from}: ${q(text)} is not a URL; use e.g. https://tether.example.com:8443`,
    );
  }
  if (url.protocol !== "https:") {
    fail(
      ERR_TETHER_BAD_SERVER_URL,
      `${from}: ${q(text)} must be an https:// URL (tether-server only speaks TLS)`,
    );
  }
  if (url.search || url.hash || url.username || url.password) {
    fail(ERR_TETHER_BAD_SERVER_URL, `${from}: ${q(text)} must not have credentials, a query or a fragment`);
  }
  return url.href.replace(/\/+$/, "");
}

/**
 * The URL `serve` records for the admin commands: `externalUrl` if given, else
 * https://<listen host>:<port>, with 127.0.0.1 for a wildcard listen address.
 */
export function serveUrl(listenHost: string, port: number, externalUrl?: string): string {
  if (externalUrl) return externalUrl;
  const wildcard =
    listenHost === "" || listenHost === "0.0.0.0" || listenHost === "::" || listenHost === "[::]";
  const host = wildcard ? "127.0.0.1" : isIP(listenHost) === 6 ? `[${listenHost}]` : listenHost;
  return `https://${host}:${port}`;
}
