// OIDC ID tokens, checked the way kube-apiserver's --oidc-* flags check them:
// the issuer's discovery document names its JWKS; signature (asymmetric
// algorithms only), iss, aud (the client id), exp and nbf are checked by
// `jose`. A token signed with a key the cached JWKS lacks makes jose fetch
// the JWKS again, at most once per cooldown (5 s): key rotation works within
// seconds, unknown-kid floods do not become fetch floods. Usernames and groups get the apiserver's
// prefixes; an identity that would still start with "system:" is refused, so
// an issuer can never mint a Kubernetes system identity.
import type { RequestOptions } from "node:https";
import { requestJson } from "@tether/common";
import {
  createRemoteJWKSet,
  customFetch,
  errors,
  type FetchImplementation,
  type JWTPayload,
  jwtVerify,
} from "jose";
import type { Caller } from "../forwarded-headers.js";
import { IdentityUnavailableError } from "./identity-error.js";

export interface OidcOptions {
  issuerUrl: string;
  clientId: string;
  /** Default "sub". */
  usernameClaim?: string;
  groupsClaim?: string;
  /** Default "<issuer>#" unless the claim is "email"; "-" means none. */
  usernamePrefix?: string;
  groupsPrefix?: string;
  /** PEM bundle trusted for the issuer's HTTPS (default: the system's roots). */
  caPem?: string;
  /**
   * Least time between two JWKS fetches for an unknown key: a token signed
   * with a key rotated in since the last fetch is refused for at most this
   * long. Default 5 s.
   */
  jwksCooldownMs?: number;
  /** Wall-clock limit on one discovery or JWKS fetch, answer body included. Default 5 s. */
  fetchTimeoutMs?: number;
}

export interface OidcCaller extends Caller {
  expiresAt?: string;
}

const ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"];
const MAX_DOCUMENT_BYTES = 1 << 20;
const FETCH_TIMEOUT_MS = 5_000;
/** Short enough that a rotated-in key works within seconds, long enough that unknown-kid floods stay cheap. */
const JWKS_COOLDOWN_MS = 5_000;
/** After a failed discovery, callers get 503 for this long before the issuer is asked again. */
const DISCOVERY_RETRY_MS = 5_000;

export class OidcVerifier {
  readonly issuer: string;
  private readonly usernameClaim: string;
  private readonly usernamePrefix: string;
  private readonly groupsPrefix: string;
  private jwks: ReturnType<typeof createRemoteJWKSet> | undefined;
  private discovering: Promise<ReturnType<typeof createRemoteJWKSet>> | undefined;
  private lastDiscoveryFailure = 0;

  constructor(private readonly options: OidcOptions) {
    const url = new URL(options.issuerUrl);
    if (url.protocol !== "https:") throw new Error("--oidc-issuer-url must be an https URL");
    this.issuer = options.issuerUrl;
    this.usernameClaim = options.usernameClaim ?? "sub";
    const prefix = options.usernamePrefix ?? (this.usernameClaim === "email" ? "-" : `${this.issuer}#`);
    this.usernamePrefix = prefix === "-" ? "" : prefix;
    this.groupsPrefix =
      options.groupsPrefix === undefined || options.groupsPrefix === "-" ? "" : options.groupsPrefix;
  }

  /** The caller of a valid ID token; undefined for any token that fails a check. */
  async verify(token: string): Promise<OidcCaller | undefined> {
    const jwks = await this.keys();
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, jwks, {
        issuer: this.issuer,
        audience: this.options.clientId,
        algorithms: ALGORITHMS,
        requiredClaims: ["exp"],
      }));
    } catch (err) {
      if (err instanceof IdentityUnavailableError) throw err;
      if (err instanceof errors.JWKSTimeout) {
        throw new IdentityUnavailableError(`the OIDC issuer's JWKS did not answer: ${err.message}`, err);
      }
      return undefined;
    }
    return this.callerOf(payload);
  }

  private callerOf(payload: JWTPayload): OidcCaller | undefined {
    const name = payload[this.usernameClaim];
    if (typeof name !== "string" || !name) return undefined;
    // As kube-apiserver: an email is a username only once the issuer verified it.
    // Only a JSON true verifies: "false", 0 or "true" are not the boolean the spec requires.
    if (this.usernameClaim === "email" && "email_verified" in payload && payload.email_verified !== true)
      return undefined;
    const user = this.usernamePrefix + name;
    const claim = this.options.groupsClaim ? payload[this.options.groupsClaim] : undefined;
    const raw = typeof claim === "string" ? [claim] : Array.isArray(claim) ? claim : [];
    const groups = raw.filter((g): g is string => typeof g === "string").map((g) => this.groupsPrefix + g);
    if (user.startsWith("system:") || groups.some((g) => g.startsWith("system:"))) return undefined;
    // Names become Impersonate-* header values: a control character could only break or split one.
    if ([user, ...groups].some((n) => /[\p{Cc}\p{Zl}\p{Zp}]/u.test(n))) return undefined;
    return {
      user,
      groups,
      ...(payload.exp ? { expiresAt: new Date(payload.exp * 1000).toISOString() } : {}),
    };
  }

  private async keys(): Promise<ReturnType<typeof createRemoteJWKSet>> {
    if (this.jwks) return this.jwks;
    if (Date.now() - this.lastDiscoveryFailure < DISCOVERY_RETRY_MS) {
      throw new IdentityUnavailableError(`the OIDC issuer ${this.issuer} could not be discovered: try again`);
    }
    this.discovering ??= this.discover().finally(() => {
      this.discovering = undefined;
    });
    return this.discovering;
  }

  private async discover(): Promise<ReturnType<typeof createRemoteJWKSet>> {
    try {
      const doc = await this.getJson(`${this.issuer.replace(/\/$/, "")}/.well-known/openid-configuration`);
      const { issuer, jwks_uri } = (doc ?? {}) as { issuer?: unknown; jwks_uri?: unknown };
      if (issuer !== this.issuer) {
        throw new IdentityUnavailableError(
          `the OIDC discovery document names issuer ${JSON.stringify(issuer)}, not ${this.issuer}`,
        );
      }
      if (typeof jwks_uri !== "string" || new URL(jwks_uri).protocol !== "https:") {
        throw new IdentityUnavailableError("the OIDC discovery document has no https jwks_uri");
      }
      const fetchJwks: FetchImplementation = async (url, init) =>
        new Response(JSON.stringify(await this.getJson(url, init?.signal ?? undefined)), { status: 200 });
      this.jwks = createRemoteJWKSet(new URL(jwks_uri), {
        timeoutDuration: this.fetchTimeoutMs,
        cooldownDuration: this.options.jwksCooldownMs ?? JWKS_COOLDOWN_MS,
        [customFetch]: fetchJwks,
      });
      return this.jwks;
    } catch (err) {
      this.lastDiscoveryFailure = Date.now();
      if (err instanceof IdentityUnavailableError) throw err;
      throw new IdentityUnavailableError(
        `the OIDC issuer ${this.issuer} could not be discovered: ${(err as Error).message}`,
        err,
      );
    }
  }

  private get fetchTimeoutMs(): number {
    return this.options.fetchTimeoutMs ?? FETCH_TIMEOUT_MS;
  }

  /**
   * A bounded JSON GET, trusting --oidc-ca-file when given; any failure means
   * the issuer is unavailable. The socket timeout alone would let an issuer
   * that drips a byte a second hold every OIDC request: a wall-clock deadline
   * (and jose's own signal) destroys the request.
   */
  private async getJson(url: string, signal?: AbortSignal): Promise<unknown> {
    const limit = this.fetchTimeoutMs;
    const deadline = AbortSignal.timeout(limit);
    const stop = signal ? AbortSignal.any([signal, deadline]) : deadline;
    const options: RequestOptions & { timeout: number } = {
      method: "GET",
      timeout: limit,
      signal: stop,
      // kube-apiserver answers its JWKS only as application/jwk-set+json (406 to a plain JSON accept).
      headers: { accept: "application/json, application/jwk-set+json" },
      ...(this.options.caPem ? { ca: this.options.caPem } : {}),
    };
    let answer: { status: number; body: unknown };
    try {
      answer = await new Promise((resolve, reject) => {
        const stopped = () => reject(new Error(`no complete answer within ${limit / 1000} s`));
        if (stop.aborted) return stopped();
        stop.addEventListener("abort", stopped, { once: true });
        requestJson(new URL(url), options, undefined, MAX_DOCUMENT_BYTES)
          .then(resolve, reject)
          .finally(() => stop.removeEventListener("abort", stopped));
      });
    } catch (err) {
      throw new IdentityUnavailableError(
        `cannot reach the OIDC issuer at ${url}: ${(err as Error).message}`,
        err,
      );
    }
    if (answer.status !== 200 || answer.body === undefined) {
      throw new IdentityUnavailableError(`the OIDC issuer answered ${url} with HTTP ${answer.status}`);
    }
    return answer.body;
  }
}
