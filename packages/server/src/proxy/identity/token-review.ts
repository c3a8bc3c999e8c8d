// Host-cluster service-account tokens, judged by the host apiserver itself
// with a TokenReview (authentication.k8s.io/v1): Tether never verifies a
// Kubernetes token on its own, so bound-token invalidation (a deleted pod or
// service account) is the apiserver's answer, not a copy of it. Answers are
// cached briefly by the token's hash, never past the token's own expiry, so a
// busy controller costs one review per TTL; refusals are not cached (the
// failure rate limit in front bounds how often a source may be refused).
import { createHash } from "node:crypto";
import { decodeJwt } from "jose";
import type { Caller } from "../forwarded-headers.js";
import { IdentityUnavailableError } from "./identity-error.js";

export interface HostApi {
  call<T = unknown>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
}

export interface TokenReviewOptions {
  api: HostApi;
  /** How long an accepted token is believed without asking again. Default 10 s. */
  cacheTtlMs?: number;
  /** Accepted tokens remembered at once; the oldest is forgotten first. Default 10,000. */
  maxCached?: number;
  /** After a failed review, how long callers get 503 at once before the host is asked again. Default 2 s. */
  outageBackoffMs?: number;
  now?: () => number;
}

export interface ReviewedCaller extends Caller {
  /** The token's `exp`, when it has one. */
  expiresAt?: string;
}

interface TokenReviewStatus {
  status?: {
    authenticated?: boolean;
    user?: { username?: unknown; groups?: unknown };
    error?: string;
  };
}

const DEFAULT_TTL_MS = 10_000;
/** A namespace and a name, each a DNS label or subdomain, as the apiserver names a service account. */
const SERVICE_ACCOUNT_USER =
  /^system:serviceaccount:[a-z0-9]([-a-z0-9]*[a-z0-9])?:[a-z0-9]([-.a-z0-9]*[a-z0-9])?$/;
const DEFAULT_MAX_CACHED = 10_000;

export class TokenReviewer {
  private readonly cache = new Map<string, { caller: ReviewedCaller; until: number }>();
  /** One review in flight per token: a burst of requests with a new token asks once. */
  private readonly inFlight = new Map<string, Promise<ReviewedCaller | undefined>>();
  private readonly ttlMs: number;
  private readonly maxCached: number;
  private readonly now: () => number;
  private readonly outageBackoffMs: number;
  private downUntil = 0;
  private lastFailure = "";

  constructor(private readonly options: TokenReviewOptions) {
    this.ttlMs = options.cacheTtlMs ?? DEFAULT_TTL_MS;
    this.maxCached = options.maxCached ?? DEFAULT_MAX_CACHED;
    this.now = options.now ?? Date.now;
    this.outageBackoffMs = options.outageBackoffMs ?? 2_000;
  }

  /** The service account behind `token`, undefined when the host apiserver does not accept it. */
  async review(token: string): Promise<ReviewedCaller | undefined> {
    const key = createHash("sha256").update(token, "utf8").digest("hex");
    const hit = this.cache.get(key);
    if (hit && hit.until > this.now()) return hit.caller;
    if (hit) this.cache.delete(key);
    let pending = this.inFlight.get(key);
    if (!pending) {
      pending = this.ask(token).finally(() => this.inFlight.delete(key));
      this.inFlight.set(key, pending);
    }
    const caller = await pending;
    if (caller) this.remember(key, caller);
    return caller;
  }

  /**
   * Whether the host still accepts a token that opened something held open
   * (live-credentials.ts asks every sweep): the host is asked again at most
   * once per cache TTL per token, when its cached answer runs out. An
   * unavailable host is not a refusal: what the token holds stays open.
   */
  async stillAccepted(token: string): Promise<boolean> {
    try {
      return (await this.review(token)) !== undefined;
    } catch (err) {
      if (err instanceof IdentityUnavailableError) return true;
      throw err;
    }
  }

  private remember(key: string, caller: ReviewedCaller): void {
    const exp = caller.expiresAt ? Date.parse(caller.expiresAt) : Number.POSITIVE_INFINITY;
    const until = Math.min(this.now() + this.ttlMs, exp);
    if (until <= this.now()) return;
    this.cache.delete(key);
    this.cache.set(key, { caller, until });
    while (this.cache.size > this.maxCached) this.cache.delete(this.cache.keys().next().value!);
  }

  private async ask(token: string): Promise<ReviewedCaller | undefined> {
    if (this.now() < this.downUntil) {
      throw new IdentityUnavailableError(
        `Tether cannot verify service-account tokens now: the host apiserver failed a moment ago (${this.lastFailure}); retry shortly`,
      );
    }
    try {
      return await this.askHost(token);
    } catch (err) {
      // A host that just failed is not asked again for a moment: an outage must not turn every
      // incoming JWT into one more hanging request to it.
      this.downUntil = this.now() + this.outageBackoffMs;
      this.lastFailure = (err as Error).message;
      throw err;
    }
  }

  private async askHost(token: string): Promise<ReviewedCaller | undefined> {
    let answer: { status: number; body: TokenReviewStatus };
    try {
      answer = await this.options.api.call<TokenReviewStatus>(
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        { apiVersion: "authentication.k8s.io/v1", kind: "TokenReview", spec: { token } },
      );
    } catch (err) {
      throw new IdentityUnavailableError(
        `Tether cannot verify service-account tokens now: ${(err as Error).message}`,
        err,
      );
    }
    if (answer.status === 401 || answer.status === 403) {
      throw new IdentityUnavailableError(
        `the host cluster refused Tether's TokenReview (HTTP ${answer.status}): grant tether-server's identity ` +
          "create on tokenreviews.authentication.k8s.io (the ClusterRole system:auth-delegator has it)",
      );
    }
    if (answer.status < 200 || answer.status >= 300) {
      throw new IdentityUnavailableError(
        `the host cluster answered Tether's TokenReview with HTTP ${answer.status}: try again`,
      );
    }
    const status = answer.body?.status;
    const username = status?.user?.username;
    if (status?.authenticated !== true || typeof username !== "string") return undefined;
    // The host's TokenReview also authenticates its own OIDC or webhook users ("alice"), whose bare
    // names could match a Tether allow rule: only the host's service accounts are this source's.
    if (!SERVICE_ACCOUNT_USER.test(username)) return undefined;
    const groups = Array.isArray(status.user?.groups)
      ? status.user.groups.filter((g): g is string => typeof g === "string")
      : [];
    const exp = expiryOf(token);
    return { user: username, groups, ...(exp ? { expiresAt: exp } : {}) };
  }
}

/** The `exp` of a JWT the apiserver has just accepted (so its claims are the issuer's). */
function expiryOf(token: string): string | undefined {
  try {
    const { exp } = decodeJwt(token);
    return typeof exp === "number" ? new Date(exp * 1000).toISOString() : undefined;
  } catch {
    return undefined;
  }
}
