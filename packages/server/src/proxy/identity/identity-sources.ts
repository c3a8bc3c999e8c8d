// Bearer tokens that are not Tether's own, routed by their shape: a JWT whose
// (unverified) `iss` is the configured OIDC issuer goes to the OIDC verifier
// only; any other JWT goes to the host apiserver's TokenReview only. A token
// is never shown to a source it was not meant for: a Tether token (tether_…)
// never reaches either, an OIDC token never reaches the host apiserver.
import { decodeJwt } from "jose";
import type { Caller } from "../forwarded-headers.js";
import type { OidcVerifier } from "./oidc.js";
import type { TokenReviewer } from "./token-review.js";

/** Larger bearer tokens are refused unread: real ID and service-account tokens are a few KiB at most. */
export const MAX_EXTERNAL_TOKEN_BYTES = 16 << 10;

export interface IdentitySources {
  /** Host-cluster service-account tokens (TokenReview); off when undefined. */
  serviceAccounts?: TokenReviewer;
  oidc?: OidcVerifier;
}

export interface ExternalCaller extends Caller {
  via: "service-account" | "oidc";
  expiresAt?: string;
}

/** The caller behind a non-Tether bearer token; undefined when no source accepts it. Throws IdentityUnavailableError. */
export async function externalCaller(
  token: string,
  sources: IdentitySources,
): Promise<ExternalCaller | undefined> {
  if (token.length > MAX_EXTERNAL_TOKEN_BYTES) return undefined;
  let issuer: unknown;
  try {
    issuer = decodeJwt(token).iss;
  } catch {
    return undefined;
  }
  if (sources.oidc && issuer === sources.oidc.issuer) {
    const caller = await sources.oidc.verify(token);
    return caller && { ...caller, via: "oidc" };
  }
  if (sources.serviceAccounts) {
    const caller = await sources.serviceAccounts.review(token);
    return caller && { ...caller, via: "service-account" };
  }
  return undefined;
}
