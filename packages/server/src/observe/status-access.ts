// Who may read the status page: whoever holds an admin token, the admin API's
// rule (admin-api.ts) — the page shows agent addresses and error messages, more
// than the read-only scrape token of /metrics should see. The token comes as a
// bearer token or as the password of HTTP Basic authentication (any user
// name): a phone's browser can send the latter, which it asks for after the
// 401, but never the former.
import type { IncomingMessage } from "node:http";
import { bearerToken, hashToken, looksLikeToken } from "../pki/tokens.js";
import type { Store } from "../store/state-store.js";

const BASIC = /^Basic\s+([A-Za-z0-9+/=]{1,1024})\s*$/i;

/** The token a request carries, bearer or Basic password; undefined when it carries none. */
export function presentedToken(req: IncomingMessage): string | undefined {
  const header = req.headers.authorization ?? "";
  const bearer = bearerToken(header);
  if (bearer) return bearer;
  const basic = BASIC.exec(header)?.[1];
  if (!basic) return undefined;
  const decoded = Buffer.from(basic, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  return colon < 0 ? undefined : decoded.slice(colon + 1);
}

/** `mayRead(req)`: whether the request carries a live admin token. */
export function adminReader(store: Store): (req: IncomingMessage) => Promise<boolean> {
  return async (req) => {
    const token = presentedToken(req);
    if (!looksLikeToken(token)) return false;
    return (await store.findToken(hashToken(token)))?.kind === "admin";
  };
}
