// Failed authentications and joins per source address. A source that failed
// `limit` times within `windowMs` is refused (429) before its next credential
// is even looked at, until its oldest failure leaves the window: guessing
// tokens goes at `limit` per window instead of thousands per second.
// Attempts still being checked count against the limit too, or a flood sent
// in parallel would have every guess checked before the first failure is
// known — but by credential: a guess needs a credential of its own, while a
// controller starting its informers (or every caller behind one SNAT
// address) sends one token many times at once, and those count as one
// attempt in flight. Memory is bounded: at most `limit` timestamps per source and
// `maxSources` sources (the least recently failing one is forgotten first);
// attempts in flight are bounded by the connections.

import { createHash } from "node:crypto";
import type { IncomingMessage } from "node:http";
import type { TLSSocket } from "node:tls";

/** The admin API's error code for a source that must wait. */
export const ERR_TETHER_RATE_LIMITED = "ERR_TETHER_RATE_LIMITED";

export interface FailureRateLimitOptions {
  limit: number;
  windowMs: number;
  /** Sources tracked at once; default 10,000. */
  maxSources?: number;
  now?: () => number;
}

/**
 * The key of a source address: IPv4 (and IPv4-mapped IPv6) as is, other IPv6
 * by its /64, the block one host or one customer usually holds whole.
 */
export function sourceKey(address: string | undefined): string {
  if (!address) return "unknown";
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!address.includes(":")) return address;
  const [head = "", tail = ""] = address.toLowerCase().split("%")[0]!.split("::");
  const left = head ? head.split(":") : [];
  const right = address.includes("::") && tail ? tail.split(":") : [];
  const groups = address.includes("::")
    ? [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right]
    : left;
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ""))
    .join(":")}::/64`;
}

/**
 * What a request presents to be judged by, as a digest: its Authorization
 * header, else its client certificate, else nothing. The key of an attempt
 * in flight (FailureRateLimit.begin); never the secret itself.
 */
export function presentedCredential(req: IncomingMessage): string {
  const authorization = req.headers.authorization;
  if (authorization !== undefined) return createHash("sha256").update(authorization).digest("base64url");
  const certificate = (req.socket as Partial<TLSSocket>).getPeerCertificate?.();
  if (certificate?.fingerprint256) return `certificate:${certificate.fingerprint256}`;
  return "none";
}

/** One attempt let through by `begin`; settle it once its credential is judged (later calls do nothing). */
export interface Attempt {
  /** Counts the failure; returns true when it used up the source's allowance. */
  failed(): boolean;
  succeeded(): void;
}

export class FailureRateLimit {
  /** Failure times per source, oldest first; the map is ordered by each source's latest failure. */
  private readonly failures = new Map<string, number[]>();
  /** Per source, the credentials being checked and how many attempts carry each. */
  private readonly checking = new Map<string, Map<string, number>>();
  private readonly limit: number;
  private readonly windowMs: number;
  private readonly maxSources: number;
  private readonly now: () => number;
  /** Numbers the attempts that name no credential, each its own. */
  private anonymous = 0;

  constructor(options: FailureRateLimitOptions) {
    this.limit = options.limit;
    this.windowMs = options.windowMs;
    this.maxSources = options.maxSources ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  /**
   * Starts an attempt of `source` with `credential` (a digest of what it
   * presented; attempts with the same one count once while in flight;
   * without one, each attempt counts): the seconds it must wait (> 0) when it
   * has used up its allowance — failures and credentials still being checked —
   * or the attempt, to settle once judged.
   */
  begin(source: string, credential = `attempt:${++this.anonymous}`): number | Attempt {
    const inFlight = this.checking.get(source);
    const wait = inFlight?.has(credential) ? this.failureWait(source) : this.retryAfter(source);
    if (wait > 0) return wait;
    const held = inFlight ?? new Map<string, number>();
    held.set(credential, (held.get(credential) ?? 0) + 1);
    this.checking.set(source, held);
    let settled = false;
    const settle = () => {
      if (settled) return false;
      settled = true;
      const left = (held.get(credential) ?? 1) - 1;
      if (left > 0) held.set(credential, left);
      else held.delete(credential);
      if (held.size === 0 && this.checking.get(source) === held) this.checking.delete(source);
      return true;
    };
    return {
      failed: () => settle() && this.fail(source),
      succeeded: () => void settle(),
    };
  }

  /** Seconds `source` must wait before its next attempt, or 0 when it may go ahead. */
  retryAfter(source: string): number {
    const wait = this.failureWait(source);
    if (wait > 0) return wait;
    // Full only with credentials still being checked: they settle within moments.
    const failures = this.failures.get(source)?.length ?? 0;
    if (failures + (this.checking.get(source)?.size ?? 0) >= this.limit) return 1;
    return 0;
  }

  /** Seconds until `source`'s oldest failure leaves the window when its failures alone fill the allowance, else 0. */
  private failureWait(source: string): number {
    const times = this.failures.get(source) ?? [];
    const now = this.now();
    this.expire(times, now);
    if (times.length === 0) this.failures.delete(source);
    if (times.length >= this.limit) return Math.max(1, Math.ceil((times[0]! + this.windowMs - now) / 1000));
    return 0;
  }

  /** Counts a failure of `source` judged outside an attempt (a member's 401); true when it used up the allowance. */
  fail(source: string): boolean {
    const now = this.now();
    this.forgetStale(now);
    const times = this.failures.get(source) ?? [];
    this.failures.delete(source);
    this.expire(times, now);
    times.push(now);
    if (times.length > this.limit) times.splice(0, times.length - this.limit);
    this.failures.set(source, times);
    if (this.failures.size > this.maxSources) {
      this.failures.delete(this.failures.keys().next().value!);
    }
    return times.length === this.limit;
  }

  /** Sources tracked now: with failures in the window or attempts being checked. */
  get size(): number {
    return new Set([...this.failures.keys(), ...this.checking.keys()]).size;
  }

  private expire(times: number[], now: number): void {
    let stale = 0;
    while (stale < times.length && times[stale]! <= now - this.windowMs) stale++;
    if (stale > 0) times.splice(0, stale);
  }

  /** Drops sources whose latest failure left the window; they sit at the front of the map. */
  private forgetStale(now: number): void {
    for (const [source, times] of this.failures) {
      if (times[times.length - 1]! > now - this.windowMs) break;
      this.failures.delete(source);
    }
  }
}
