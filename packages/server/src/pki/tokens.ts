// Bearer tokens issued by Tether (join tokens for agents, user tokens for
// host-side clients). A token is `tether_` + 32 random bytes in base64url
// (256 bits from the OS CSPRNG). Only its SHA-256 is ever stored; a high-
// entropy token needs no slow KDF. Comparisons are constant-time.
import { createHash, randomBytes } from "node:crypto";

export const TOKEN_PREFIX = "tether_";
const TOKEN_BYTES = 32;
const TOKEN_RE = /^tether_[A-Za-z0-9_-]{43}$/;

/** "sha256:<hex>" of the token's UTF-8 bytes: what the store keeps. */
export function hashToken(token: string): string {
  return "sha256:" + createHash("sha256").update(token, "utf8").digest("hex");
}

/** A new token and its hash. Hand the token out once; store only the hash. */
export function issueToken(): { token: string; hash: string } {
  const token = TOKEN_PREFIX + randomBytes(TOKEN_BYTES).toString("base64url");
  return { token, hash: hashToken(token) };
}

const BEARER = /^Bearer\s+(\S+)\s*$/i;

/** The token of an `Authorization: Bearer …` header value; undefined for any other value or none. */
export function bearerToken(authorization: string | undefined): string | undefined {
  return authorization === undefined ? undefined : BEARER.exec(authorization)?.[1];
}

/** Whether `token` has the shape of a token issueToken() makes (a cheap pre-check, not a secret check). */
export function looksLikeToken(token: unknown): token is string {
  return typeof token === "string" && TOKEN_RE.test(token);
}

/** Whether `hash` has the shape hashToken() produces. */
export function isTokenHash(hash: unknown): hash is string {
  return typeof hash === "string" && /^sha256:[0-9a-f]{64}$/.test(hash);
}

/**
 * A token's public id (`tok_` + 16 hex digits), what `token list` shows and
 * `token revoke` takes. It is a hash of the stored hash, not a part of it, so
 * it tells nothing about the token or its hash; being derived, every record
 * has one, old ones included, and no store has to keep it.
 */
export function tokenId(hash: string): string {
  return "tok_" + createHash("sha256").update(hash, "utf8").digest("hex").slice(0, 16);
}

export function isTokenId(id: unknown): id is string {
  return typeof id === "string" && /^tok_[0-9a-f]{16}$/.test(id);
}
