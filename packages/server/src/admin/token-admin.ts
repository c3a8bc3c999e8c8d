// User tokens as the admin sees them: listed by id (pki/tokens.ts tokenId)
// with their user, groups, scope and expiry — never the token or its hash —
// and revoked by id or by user. Revoking deletes the record, so the token
// stops authenticating at once; a server then ends what it holds open
// (proxy/live-credentials.ts): at once through the admin API, else within
// its sweep interval.
import { isTokenId, tokenId } from "../pki/tokens.js";
import type { Store, TokenRecord } from "../store/state-store.js";
import { checkIdentity, fail, q } from "./admin-input.js";

export const ERR_TETHER_UNKNOWN_TOKEN = "ERR_TETHER_UNKNOWN_TOKEN";
export const ERR_TETHER_INVALID_TOKEN_ID = "ERR_TETHER_INVALID_TOKEN_ID";

export interface TokenInfo {
  id: string;
  user: string;
  groups: string[];
  /** Clusters the token may reach, ["*"] for all. */
  clusters: string[];
  expiresAt: string;
}

/** Which tokens `token revoke` takes: one by id, or every token of a user. */
export type TokenSelector = { id: string } | { user: string };

function info(r: TokenRecord): TokenInfo {
  return {
    id: tokenId(r.hash),
    user: r.user ?? "",
    groups: [...(r.groups ?? [])],
    clusters: [...(r.clusters ?? (r.cluster ? [r.cluster] : []))],
    expiresAt: r.expiresAt,
  };
}

async function userTokens(store: Store): Promise<[TokenRecord, TokenInfo][]> {
  return (await store.listTokens())
    .filter((r) => r.kind === "user")
    .map((r): [TokenRecord, TokenInfo] => [r, info(r)])
    .sort(([, a], [, b]) => a.user.localeCompare(b.user) || a.expiresAt.localeCompare(b.expiresAt));
}

/** Every unexpired user token, or those of `user`. */
export async function listUserTokens(store: Store, user?: string): Promise<TokenInfo[]> {
  if (user !== undefined) checkListedUser(user);
  return (await userTokens(store)).filter(([, t]) => user === undefined || t.user === user).map(([, t]) => t);
}

/** Deletes the selected user tokens; returns what was revoked. An unknown id is ERR_TETHER_UNKNOWN_TOKEN. */
export async function revokeUserTokens(store: Store, selector: TokenSelector): Promise<TokenInfo[]> {
  if ("id" in selector) {
    if (!isTokenId(selector.id)) {
      fail(
        ERR_TETHER_INVALID_TOKEN_ID,
        `${q(selector.id)} is not a token id: "token list" shows them (tok_ and 16 hex digits)`,
      );
    }
  } else {
    checkListedUser(selector.user);
  }
  const chosen = (await userTokens(store)).filter(([, t]) =>
    "id" in selector ? t.id === selector.id : t.user === selector.user,
  );
  if ("id" in selector && chosen.length === 0) {
    fail(
      ERR_TETHER_UNKNOWN_TOKEN,
      `no user token with id ${selector.id} (it may have expired): "token list" shows them`,
    );
  }
  const revoked: TokenInfo[] = [];
  for (const [r, t] of chosen) if (await store.deleteToken(r.hash)) revoked.push(t);
  return revoked;
}

/** A user name as tokens are issued for (admin-input.ts checkIdentity); system: names never are, but may be asked about. */
function checkListedUser(user: string): void {
  if (user.toLowerCase().startsWith("system:")) return;
  checkIdentity("user", user);
}
