// How many requests and upgrades one caller holds on one cluster at a time.
// Every one of them is a stream of the cluster's single tunnel session, so
// without a share per caller one user (held watches, idle port-forwards)
// could take all of the session's streams from everybody else.
import { createHash } from "node:crypto";
import type { IncomingMessage } from "node:http";
import type { AuthenticatedCaller } from "./authenticate.js";

/**
 * Who a caller is for the quota: the authenticated user in impersonate mode
 * (a token and a certificate of one user share it), in passthrough mode the
 * credential itself — hashed, so that the key in memory is no credential.
 */
export function callerKey(req: IncomingMessage, caller: AuthenticatedCaller | undefined): string {
  if (caller) return `user:${caller.user}`;
  return `credential:${createHash("sha256").update(passthroughCredential(req.headers.authorization)).digest("base64url")}`;
}

/**
 * The part of an Authorization header the apiserver authenticates: for a
 * bearer token the token alone (the apiserver ignores the scheme's case and
 * anything after the token), so spelling one token differently is not a
 * second caller.
 */
function passthroughCredential(authorization: string | undefined): string {
  const value = authorization ?? "";
  const bearer = /^bearer\s+(\S+)/i.exec(value);
  return bearer ? `bearer ${bearer[1]}` : value;
}

/** Calls `release` when `target` closes — at once if it closed already (a caller that left during admission). */
export function releaseOnClose(
  target: { readonly destroyed: boolean; once(event: "close", fn: () => void): unknown },
  release: () => void,
): void {
  if (target.destroyed) release();
  else target.once("close", release);
}

export class CallerQuota {
  private readonly held = new Map<string, number>();

  constructor(readonly max: number) {}

  /**
   * Takes one of the caller's `max` slots on `cluster`; returns the function
   * that gives it back (calling it again does nothing), or undefined when the
   * caller already holds all of them.
   */
  acquire(cluster: string, caller: string): (() => void) | undefined {
    const key = `${cluster}\u0000${caller}`;
    const count = this.held.get(key) ?? 0;
    if (count >= this.max) return undefined;
    this.held.set(key, count + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.held.get(key) ?? 1) - 1;
      if (left > 0) this.held.set(key, left);
      else this.held.delete(key);
    };
  }

  /** What `caller` holds on `cluster` now. */
  holding(cluster: string, caller: string): number {
    return this.held.get(`${cluster}\u0000${caller}`) ?? 0;
  }

  /** Callers holding anything, over all clusters (the map never keeps an idle caller). */
  get size(): number {
    return this.held.size;
  }
}
