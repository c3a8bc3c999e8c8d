// The requests and upgraded connections (watches, logs -f, exec, attach,
// port-forward) each host credential holds open, so that they end when it
// does: at its expiry by one timer per credential, at its revocation at once
// when this server revokes it (the admin API) or within a sweep interval when
// another process did (the CLI on the state, another replica). The sweep costs
// one store read per credential that holds something, never one per stream.
// A host service-account token is asked about again in each sweep
// (TokenReviewer bounds that to one TokenReview per cache TTL per token), so
// its streams end once its account or Secret is deleted.
import { tokenId } from "../pki/tokens.js";
import type { Store } from "../store/state-store.js";
import { type AuthenticatedCaller, CERT_CREDENTIAL, TOKEN_CREDENTIAL } from "./authenticate.js";

/** setTimeout's longest delay; a later expiry re-arms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export type CredentialEnd = "expired" | "revoked";

interface Held {
  expiresAt?: number;
  timer?: NodeJS.Timeout;
  stillValid?: () => Promise<boolean>;
  ends: Set<(why: CredentialEnd) => void>;
}

export interface LiveCredentialsOptions {
  /** How often credentials revoked elsewhere are looked for; default 1000 ms. */
  sweepIntervalMs?: number;
  /** Told when a credential's holdings are ended (for a log line; never the credential itself). */
  onEnded?: (credentialId: string, why: CredentialEnd, count: number) => void;
}

export class LiveCredentials {
  private readonly held = new Map<string, Held>();
  private sweeper: NodeJS.Timeout | undefined;
  private sweeping = false;
  private readonly sweepIntervalMs: number;

  constructor(
    private readonly store: Store,
    private readonly options: LiveCredentialsOptions = {},
  ) {
    this.sweepIntervalMs = options.sweepIntervalMs ?? 1000;
  }

  /**
   * Registers something `caller` holds open; `end` closes it. Returns the
   * release to call when it closes by itself. A caller without a credential
   * id (none today but passthrough, which has no caller) holds nothing.
   */
  hold(caller: AuthenticatedCaller | undefined, end: (why: CredentialEnd) => void): () => void {
    const id = caller?.credentialId;
    if (!id) return () => {};
    let entry = this.held.get(id);
    if (!entry) {
      entry = { ends: new Set() };
      const expiresAt = caller.expiresAt?.getTime();
      if (expiresAt !== undefined && !Number.isNaN(expiresAt)) entry.expiresAt = expiresAt;
      if (caller.stillValid) entry.stillValid = caller.stillValid;
      this.held.set(id, entry);
      this.arm(id, entry);
      this.startSweeping();
    }
    entry.ends.add(end);
    const held = entry;
    return () => {
      held.ends.delete(end);
      if (held.ends.size === 0 && this.held.get(id) === held) this.forget(id, held);
    };
  }

  /** Ends everything the credentials hold; returns how many things were ended. */
  end(credentialIds: Iterable<string>, why: CredentialEnd): number {
    let count = 0;
    for (const id of credentialIds) {
      const entry = this.held.get(id);
      if (!entry) continue;
      this.forget(id, entry);
      const ends = [...entry.ends];
      for (const end of ends) end(why);
      count += ends.length;
      this.options.onEnded?.(id, why, ends.length);
    }
    return count;
  }

  /** How many credentials hold something (for tests and metrics). */
  get size(): number {
    return this.held.size;
  }

  close(): void {
    for (const [id, entry] of this.held) this.forget(id, entry);
  }

  private arm(id: string, entry: Held): void {
    if (entry.expiresAt === undefined) return;
    const left = entry.expiresAt - Date.now();
    entry.timer = setTimeout(
      () => (left > MAX_TIMER_MS ? this.arm(id, entry) : this.end([id], "expired")),
      Math.max(0, Math.min(left, MAX_TIMER_MS)),
    );
    entry.timer.unref();
  }

  private forget(id: string, entry: Held): void {
    clearTimeout(entry.timer);
    this.held.delete(id);
    if (this.held.size === 0 && this.sweeper) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }

  private startSweeping(): void {
    if (this.sweeper) return;
    this.sweeper = setInterval(() => void this.sweep(), this.sweepIntervalMs);
    this.sweeper.unref();
  }

  /** Ends the holdings of tokens no longer in the store, of revoked certificate serials and of tokens the host now refuses. */
  async sweep(): Promise<void> {
    if (this.sweeping || this.held.size === 0) return;
    this.sweeping = true;
    try {
      const ids = [...this.held.keys()];
      const gone: string[] = [];
      if (ids.some((id) => id.startsWith(TOKEN_CREDENTIAL))) {
        const live = new Set((await this.store.listTokens()).map((t) => TOKEN_CREDENTIAL + tokenId(t.hash)));
        gone.push(...ids.filter((id) => id.startsWith(TOKEN_CREDENTIAL) && !live.has(id)));
      }
      for (const id of ids) {
        if (id.startsWith(CERT_CREDENTIAL) && (await this.store.isRevoked(id.slice(CERT_CREDENTIAL.length))))
          gone.push(id);
      }
      const asked = await Promise.all(
        ids.map(async (id) => {
          const check = this.held.get(id)?.stillValid;
          return check && !(await check().catch(() => true)) ? id : undefined;
        }),
      );
      gone.push(...asked.filter((id): id is string => id !== undefined));
      this.end(gone, "revoked");
    } catch {
      // The store could not be read: the next sweep tries again; new requests are refused meanwhile anyway.
    } finally {
      this.sweeping = false;
    }
  }
}
