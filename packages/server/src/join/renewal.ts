// Certificate renewal over an agent's tunnel, bounded so that a hostile agent
// cannot pin the server's memory or grow its issued-certificate list:
//   - one renewal stream per session at a time (the accept hook resets others
//     with STREAM_LIMIT before they hold anything);
//   - a body of at most MAX_JOIN_BODY bytes: one byte more resets the stream
//     (PROTOCOL_ERROR) rather than leaving it paused and buffered;
//   - a deadline for the whole exchange (reset with TIMEOUT);
//   - refused while the session's certificate is younger than a quarter of
//     its lifetime (the agent renews after 60 % of it);
//   - per cluster, a bucket of RENEWAL_BURST renewals refilled at one per
//     quarter of the certificate lifetime, so reconnecting with an older
//     certificate does not get around the age rule.
// The cluster, its incarnation and the certificate's state come from the
// session, never from the request: a revoked certificate or one of an
// earlier registration of the name gets nothing.

import { type IssuedForAgent, MAX_JOIN_BODY, RENEW_SERVICE } from "@tether/common";
import type { AcceptDecision, OpenRequest, TunnelStream } from "@tether/tunnel";
import { ResetCode } from "@tether/tunnel";
import type { Logger } from "../logger.js";
import type { AuditLog } from "../observe/audit-log.js";
import { foreignIncarnation } from "../pki/incarnation.js";
import type { AgentSession } from "../proxy/agent-sessions.js";
import type { Frozen } from "../store/records.js";
import type { ClusterRecord, Store } from "../store/state-store.js";
import { type JoinEndpoint, JoinError } from "./join-endpoint.js";

export const DEFAULT_RENEWAL_DEADLINE_MS = 30_000;
/** Renewals a cluster may have in a row before the rate limit applies. */
export const RENEWAL_BURST = 3;

export interface RenewalOptions {
  /** How long one renewal exchange may take. Default DEFAULT_RENEWAL_DEADLINE_MS. */
  deadlineMs?: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

export class Renewals {
  private readonly deadlineMs: number;
  private readonly buckets = new Map<string, Bucket>();
  /** Sessions with a renewal stream open. */
  private readonly busy = new WeakSet<object>();

  constructor(
    private readonly deps: { store: Store; join: JoinEndpoint; log: Logger; audit?: AuditLog },
    options: RenewalOptions = {},
  ) {
    this.deadlineMs = options.deadlineMs ?? DEFAULT_RENEWAL_DEADLINE_MS;
  }

  /**
   * The tunnel's accept hook for streams the agent of `session` opens: only
   * renewal, and one at a time. `session` is any object identifying the tunnel
   * (the Session itself); it stays busy until the accepted stream closes.
   */
  accept(session: object, open: OpenRequest): AcceptDecision {
    if (open.service !== RENEW_SERVICE) return ResetCode.REFUSED;
    if (this.busy.has(session)) return ResetCode.STREAM_LIMIT;
    this.busy.add(session);
    return true;
  }

  /** Serves an accepted renewal stream; on success the entry holds the new certificate. */
  async serve(entry: AgentSession, stream: TunnelStream): Promise<IssuedForAgent | undefined> {
    const session = entry.session;
    stream.on("error", () => {});
    stream.once("close", () => this.busy.delete(session));
    const deadline = setTimeout(() => stream.reset(ResetCode.TIMEOUT), this.deadlineMs);
    deadline.unref();
    stream.once("close", () => clearTimeout(deadline));
    const { cluster } = entry;
    let body: string | undefined;
    try {
      body = await readOrReset(stream);
    } catch {
      this.deps.log.warn({ cluster }, "renewal stream reset: no body within the size limit and deadline");
      this.deps.audit?.renewal(entry, "reset");
      return undefined;
    }
    try {
      const csr = (JSON.parse(body) as { csr?: unknown } | null)?.csr;
      const checked = await this.check(entry);
      const publicKeyPem = await this.deps.join.publicKeyOf(csr);
      const record = await this.deps.store.getCluster(cluster);
      // A registration that changed while the CSR was checked gets nothing.
      if (record?.uid !== checked.uid) throw new JoinError("Forbidden", `cluster "${cluster}" was removed`);
      const issued = await this.deps.join.issue(record, publicKeyPem);
      entry.serial = issued.serial;
      entry.certNotAfter = new Date(issued.notAfter);
      entry.certIssuedAt = new Date();
      entry.incarnation = record.uid;
      stream.end(JSON.stringify(issued));
      this.deps.audit?.renewal(entry, "issued", { serial: issued.serial, notAfter: issued.notAfter });
      this.deps.log.info(
        { cluster, serial: issued.serial, notAfter: issued.notAfter },
        "certificate renewed",
      );
      return issued;
    } catch (err) {
      const message = err instanceof JoinError || err instanceof SyntaxError ? err.message : "renewal failed";
      this.deps.log.warn({ cluster, err: (err as Error).message }, "renewal refused");
      stream.end(JSON.stringify({ error: message }));
      this.deps.audit?.renewal(entry, "refused", { message });
      return undefined;
    }
  }

  /**
   * The cluster's record if the session's certificate may be renewed now (and
   * then one renewal is taken from the cluster's bucket); a JoinError otherwise.
   */
  private async check(entry: AgentSession): Promise<Frozen<ClusterRecord>> {
    const { cluster } = entry;
    const record = await this.deps.store.getCluster(cluster);
    if (!record) throw new JoinError("Forbidden", `cluster "${cluster}" was removed`);
    if (await this.deps.store.isRevoked(entry.serial))
      throw new JoinError("Forbidden", `the certificate of cluster "${cluster}" has been revoked`);
    const foreign = foreignIncarnation(entry, record);
    if (foreign) throw new JoinError("Forbidden", `no renewal: ${foreign}`);
    const now = Date.now();
    const lifetime = entry.certNotAfter.getTime() - entry.certIssuedAt.getTime();
    if (now - entry.certIssuedAt.getTime() < lifetime / 4) {
      throw new JoinError(
        "Forbidden",
        `the certificate is younger than a quarter of its lifetime: renew after ` +
          new Date(entry.certIssuedAt.getTime() + lifetime / 4).toISOString(),
      );
    }
    if (this.tokens(cluster, now) < 1) {
      throw new JoinError(
        "Forbidden",
        `cluster "${cluster}" renewed ${RENEWAL_BURST} times in a row: renew later`,
      );
    }
    this.buckets.get(cluster)!.tokens -= 1;
    return record;
  }

  /** Tokens in the cluster's bucket now: one more per quarter of the certificate lifetime, at most RENEWAL_BURST. */
  private tokens(cluster: string, now: number): number {
    const bucket = this.buckets.get(cluster) ?? { tokens: RENEWAL_BURST, at: now };
    const refill = (now - bucket.at) / (this.deps.join.certTtlMs / 4);
    bucket.tokens = Math.min(RENEWAL_BURST, bucket.tokens + refill);
    bucket.at = now;
    this.buckets.set(cluster, bucket);
    return bucket.tokens;
  }

  /** Forgets a removed cluster's bucket. */
  forget(cluster: string): void {
    this.buckets.delete(cluster);
  }
}

/** The whole body of `stream`, or a rejection after resetting it when it exceeds MAX_JOIN_BODY or fails. */
function readOrReset(stream: TunnelStream): Promise<string> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_JOIN_BODY) {
        chunks.length = 0;
        stream.reset(ResetCode.PROTOCOL_ERROR);
        reject(new Error(`renewal body larger than ${MAX_JOIN_BODY} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    // Events, not `for await`: the async iterator would destroy the stream before the reply.
    stream.once("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    stream.once("close", () => reject(new Error("renewal stream closed before its body ended")));
  });
}
