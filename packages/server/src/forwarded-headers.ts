// What a member apiserver is allowed to see of a caller's headers. In
// impersonate mode nothing the caller sends may carry identity: every
// Authorization and Impersonate-* header is dropped and Tether's own
// impersonation headers, naming the authenticated caller, take their place.
import type { IncomingHttpHeaders } from "node:http";
import type { AuthMode } from "./state-store.js";

/** Host identities are prefixed so they can never collide with a member's own users and groups. */
export const IDENTITY_PREFIX = "tether:";

export interface Caller {
  user: string;
  groups: string[];
}

const CREDENTIAL_HEADER = /^(authorization|proxy-authorization|impersonate-.*)$/i;

export function impersonationHeaders(caller: Caller): {
  "impersonate-user": string;
  "impersonate-group"?: string[];
} {
  const groups = caller.groups.map((g) => IDENTITY_PREFIX + g);
  return {
    "impersonate-user": IDENTITY_PREFIX + caller.user,
    ...(groups.length > 0 ? { "impersonate-group": groups } : {}),
  };
}

/**
 * Connection-level headers of the caller's connection to Tether; they say
 * nothing about the tunnel stream (a caller's "Connection: close" must not
 * close a pooled stream).
 */
const HOP_BY_HOP = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"];

/** Rewrites parsed headers of a plain (non-upgrade) request in place for forwarding. */
export function rewriteHeaders(headers: IncomingHttpHeaders, mode: AuthMode, caller?: Caller): void {
  for (const name of String(headers.connection ?? "").split(",")) {
    const token = name.trim().toLowerCase();
    if (token) delete headers[token];
  }
  for (const name of HOP_BY_HOP) delete headers[name];
  if (mode === "passthrough") return;
  for (const name of Object.keys(headers)) if (CREDENTIAL_HEADER.test(name)) delete headers[name];
  if (!caller) throw new Error("impersonate mode needs an authenticated caller");
  Object.assign(headers, impersonationHeaders(caller));
}

/** The same for raw header pairs ([name, value, name, value, …]), as an upgrade request head needs. */
export function rewriteRawHeaders(raw: string[], mode: AuthMode, caller?: Caller): [string, string][] {
  const pairs: [string, string][] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) pairs.push([raw[i]!, raw[i + 1]!]);
  if (mode === "passthrough") return pairs;
  if (!caller) throw new Error("impersonate mode needs an authenticated caller");
  const kept = pairs.filter(([name]) => !CREDENTIAL_HEADER.test(name));
  const imp = impersonationHeaders(caller);
  kept.push(["Impersonate-User", imp["impersonate-user"]]);
  for (const g of imp["impersonate-group"] ?? []) kept.push(["Impersonate-Group", g]);
  return kept;
}

const TOKEN_CHARS = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Serialises a request head; refuses header names or values that could split the request. */
export function requestHead(method: string, path: string, headers: [string, string][]): string {
  if (!TOKEN_CHARS.test(method) || /[\r\n\s]/.test(path)) throw new Error("invalid request line");
  let head = `${method} ${path} HTTP/1.1\r\n`;
  for (const [name, value] of headers) {
    if (!TOKEN_CHARS.test(name) || /[\r\n\0]/.test(value)) throw new Error(`invalid header ${name}`);
    head += `${name}: ${value}\r\n`;
  }
  return `${head}\r\n`;
}
