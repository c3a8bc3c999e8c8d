// What a member apiserver is allowed to see of a caller's headers. In
// impersonate mode nothing the caller sends may carry identity: every
// Authorization and Impersonate-* header is dropped and Tether's own
// impersonation headers, naming the authenticated caller, take their place —
// or, when the member allowed the caller's own --as (impersonation.ts), the
// identity it asked for.
// In both modes what a caller says about where it connects from is replaced
// by what Tether saw: audit logs on the member must not record a forged source.
import type { IncomingHttpHeaders } from "node:http";
import type { AuthMode } from "../store/state-store.js";

/** Host identities are prefixed so they can never collide with a member's own users and groups. */
export const IDENTITY_PREFIX = "tether:";

export interface Caller {
  user: string;
  groups: string[];
}

const CREDENTIAL_HEADER = /^(authorization|proxy-authorization|impersonate-.*)$/i;
const FORWARDING_HEADER = /^(x-forwarded-.*|forwarded|x-real-ip)$/i;

/**
 * A name as header bytes: its UTF-8, one latin1 character per byte, which
 * Node writes as those bytes. kube-apiserver reads a header as the Go string
 * of its bytes, so "José" or "用户" arrive as themselves; a name written as
 * itself would go out as latin1 ("José" as one 0xE9 byte) or throw
 * ERR_INVALID_CHAR (anything past U+00FF).
 */
export function headerBytes(name: string): string {
  return /^[\x20-\x7e]*$/.test(name) ? name : Buffer.from(name, "utf8").toString("latin1");
}

export function impersonationHeaders(caller: Caller): {
  "impersonate-user": string;
  "impersonate-group"?: string[];
} {
  const groups = caller.groups.map((g) => headerBytes(IDENTITY_PREFIX + g));
  return {
    "impersonate-user": headerBytes(IDENTITY_PREFIX + caller.user),
    ...(groups.length > 0 ? { "impersonate-group": groups } : {}),
  };
}

/**
 * Connection-level headers of the caller's connection to Tether; they say
 * nothing about the tunnel stream (a caller's "Connection: close" must not
 * close a pooled stream).
 */
const HOP_BY_HOP = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"];

/**
 * Rewrites parsed headers of a plain (non-upgrade) request in place for
 * forwarding. `peer` is the caller's address as Tether's socket saw it;
 * `acting`, the impersonation headers of an identity the member let the
 * caller act as (impersonation.ts requestedHeaders).
 */
export function rewriteHeaders(
  headers: IncomingHttpHeaders,
  mode: AuthMode,
  caller: Caller | undefined,
  peer: string | undefined,
  acting?: [string, string][],
): void {
  for (const name of String(headers.connection ?? "").split(",")) {
    const token = name.trim().toLowerCase();
    if (token) delete headers[token];
  }
  for (const name of HOP_BY_HOP) delete headers[name];
  for (const name of Object.keys(headers)) if (FORWARDING_HEADER.test(name)) delete headers[name];
  if (peer) headers["x-forwarded-for"] = peer;
  if (mode === "passthrough") return;
  for (const name of Object.keys(headers)) if (CREDENTIAL_HEADER.test(name)) delete headers[name];
  if (!caller) throw new Error("impersonate mode needs an authenticated caller");
  if (!acting) {
    Object.assign(headers, impersonationHeaders(caller));
    return;
  }
  for (const [name, value] of acting) {
    const key = name.toLowerCase();
    const had = headers[key];
    headers[key] = had === undefined ? value : [...(Array.isArray(had) ? had : [String(had)]), value];
  }
}

/** The same for raw header pairs ([name, value, name, value, …]), as an upgrade request needs. */
export function rewriteRawHeaders(
  raw: string[],
  mode: AuthMode,
  caller: Caller | undefined,
  peer: string | undefined,
  acting?: [string, string][],
): [string, string][] {
  const pairs: [string, string][] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (!FORWARDING_HEADER.test(raw[i]!)) pairs.push([raw[i]!, raw[i + 1]!]);
  }
  if (peer) pairs.push(["X-Forwarded-For", peer]);
  if (mode === "passthrough") return pairs;
  if (!caller) throw new Error("impersonate mode needs an authenticated caller");
  const kept = pairs.filter(([name]) => !CREDENTIAL_HEADER.test(name));
  if (acting) return [...kept, ...acting];
  const imp = impersonationHeaders(caller);
  kept.push(["Impersonate-User", imp["impersonate-user"]]);
  for (const g of imp["impersonate-group"] ?? []) kept.push(["Impersonate-Group", g]);
  return kept;
}
