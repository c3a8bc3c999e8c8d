// A caller's own impersonation (kubectl --as, --as-group, --as-uid, and
// Impersonate-Extra-*) in impersonate mode. The member decides, as its
// apiserver would for a direct caller: for every requested attribute a
// SelfSubjectAccessReview for verb "impersonate" is sent through the tunnel
// as the caller's Tether identity (tether:<user>, tether:<groups>), on the
// resources the apiserver's impersonation filter checks — users or
// serviceaccounts, groups, uids, userextras/<key>. Only when every one is
// allowed is the requested identity forwarded in place of the caller's;
// otherwise the caller gets a 403 that names what was refused. The caller's
// headers are parsed from the raw pairs (Node joins repeated headers with
// ", ", which would merge groups), and anything malformed or ambiguous — a
// second user or uid, groups without a user, an unknown Impersonate-*
// header, an undecodable extra key — is refused, never guessed at or dropped.
import { type Agent, request } from "node:http";
import type { StatusReason } from "@tether/common";
import { type Caller, impersonationHeaders } from "./forwarded-headers.js";

/** The identity a caller asked to act as. */
export interface RequestedIdentity {
  user: string;
  groups: string[];
  uid?: string;
  /** Extra keys lower-cased and percent-decoded, as the apiserver reads them. */
  extra: Record<string, string[]>;
}

/** At most this many Impersonate-* headers on one request: each costs a review on the member. */
export const MAX_IMPERSONATION_HEADERS = 32;
const REVIEW_TIMEOUT_MS = 10_000;
const REVIEWS_AT_ONCE = 4;
const REVIEW_MAX_BYTES = 64 << 10;
const SERVICE_ACCOUNT = /^system:serviceaccount:([^:]+):([^:]+)$/;
const AUTHENTICATION_GROUP = "authentication.k8s.io";

export type ImpersonationRequest = { identity?: RequestedIdentity } | { error: string };

/** The caller's requested identity from raw header pairs; `{}` when it asks for none. */
export function requestedIdentity(raw: string[]): ImpersonationRequest {
  const users: string[] = [];
  const uids: string[] = [];
  const groups: string[] = [];
  // No prototype: an extra key may be "__proto__".
  const extra: Record<string, string[]> = Object.create(null);
  let count = 0;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (!name.startsWith("impersonate-")) continue;
    if (++count > MAX_IMPERSONATION_HEADERS) {
      return {
        error: `at most ${MAX_IMPERSONATION_HEADERS} Impersonate-* headers are accepted on one request`,
      };
    }
    const value = raw[i + 1]!;
    if (name === "impersonate-user") users.push(value);
    else if (name === "impersonate-group") groups.push(value);
    else if (name === "impersonate-uid") uids.push(value);
    else if (name.startsWith("impersonate-extra-") && name.length > "impersonate-extra-".length) {
      let key: string;
      try {
        key = decodeURIComponent(name.slice("impersonate-extra-".length)).toLowerCase();
      } catch {
        return {
          error: `the Impersonate-Extra- header ${JSON.stringify(raw[i]!.slice(0, 80))} is not valid percent-encoding`,
        };
      }
      const values = extra[key] ?? [];
      values.push(value);
      extra[key] = values;
    } else {
      return { error: `unknown impersonation header ${JSON.stringify(raw[i]!.slice(0, 80))}` };
    }
  }
  if (count === 0) return {};
  if (users.length !== 1) {
    return {
      error:
        users.length === 0
          ? "Impersonate-Group, Impersonate-Uid and Impersonate-Extra-* need an Impersonate-User (kubectl --as)"
          : "give Impersonate-User once",
    };
  }
  if (uids.length > 1) return { error: "give Impersonate-Uid at most once" };
  const user = users[0]!;
  if (user.length === 0) return { error: "Impersonate-User is empty" };
  return { identity: { user, groups, ...(uids[0] === undefined ? {} : { uid: uids[0] }), extra } };
}

interface ResourceAttributes {
  verb: "impersonate";
  group: string;
  resource: string;
  name: string;
  namespace?: string;
  subresource?: string;
}

/** What the apiserver's impersonation filter checks for `identity`, each with how to say it. */
export function impersonationChecks(
  identity: RequestedIdentity,
): { what: string; attributes: ResourceAttributes }[] {
  const checks: { what: string; attributes: ResourceAttributes }[] = [];
  const sa = SERVICE_ACCOUNT.exec(identity.user);
  checks.push(
    sa
      ? {
          what: `service account "${sa[1]}/${sa[2]}"`,
          attributes: {
            verb: "impersonate",
            group: "",
            resource: "serviceaccounts",
            namespace: sa[1]!,
            name: sa[2]!,
          },
        }
      : {
          what: `user "${identity.user}"`,
          attributes: { verb: "impersonate", group: "", resource: "users", name: identity.user },
        },
  );
  for (const g of identity.groups) {
    checks.push({
      what: `group "${g}"`,
      attributes: { verb: "impersonate", group: "", resource: "groups", name: g },
    });
  }
  if (identity.uid !== undefined) {
    checks.push({
      what: `uid "${identity.uid}"`,
      attributes: { verb: "impersonate", group: AUTHENTICATION_GROUP, resource: "uids", name: identity.uid },
    });
  }
  for (const [key, values] of Object.entries(identity.extra)) {
    for (const v of values) {
      checks.push({
        what: `extra "${key}"="${v}"`,
        attributes: {
          verb: "impersonate",
          group: AUTHENTICATION_GROUP,
          resource: "userextras",
          subresource: key,
          name: v,
        },
      });
    }
  }
  return checks;
}

export type ImpersonationDecision = { ok: true } | { ok: false; reason: StatusReason; message: string };

/** Asks the member, through `agent` (a pool of tunnel streams), whether `caller` may impersonate `identity`. */
export async function checkImpersonation(
  agent: Agent,
  caller: Caller,
  identity: RequestedIdentity,
  cluster: string,
): Promise<ImpersonationDecision> {
  const checks = impersonationChecks(identity);
  let answers: boolean[];
  try {
    answers = [];
    // A few at a time: one request must not take a tunnel stream per attribute.
    for (let i = 0; i < checks.length; i += REVIEWS_AT_ONCE) {
      const batch = checks.slice(i, i + REVIEWS_AT_ONCE);
      answers.push(...(await Promise.all(batch.map((c) => selfReview(agent, caller, c.attributes)))));
    }
  } catch (err) {
    return {
      ok: false,
      reason: "ServiceUnavailable",
      message: `could not check on cluster "${cluster}" whether you may impersonate (kubectl --as): ${(err as Error).message}`,
    };
  }
  const refused = checks.filter((_, i) => !answers[i]);
  if (refused.length === 0) return { ok: true };
  return {
    ok: false,
    reason: "Forbidden",
    message:
      `user "${caller.user}" may not impersonate ${refused.map((c) => c.what).join(", ")} on cluster "${cluster}": ` +
      `its RBAC must grant the Tether identity "tether:${caller.user}" (or one of its groups) verb impersonate on that`,
  };
}

/** One SelfSubjectAccessReview as the caller's Tether identity; resolves with `status.allowed`. */
function selfReview(agent: Agent, caller: Caller, attributes: ResourceAttributes): Promise<boolean> {
  const body = JSON.stringify({
    apiVersion: "authorization.k8s.io/v1",
    kind: "SelfSubjectAccessReview",
    spec: { resourceAttributes: attributes },
  });
  return new Promise((resolve, reject) => {
    const req = request(
      {
        agent,
        method: "POST",
        host: "apiserver.tether",
        path: "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        timeout: REVIEW_TIMEOUT_MS,
        headers: {
          ...impersonationHeaders(caller),
          "content-type": "application/json",
          accept: "application/json",
          "content-length": Buffer.byteLength(body),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (c: Buffer) => {
          size += c.length;
          if (size > REVIEW_MAX_BYTES) req.destroy(new Error("the review's answer is too large"));
          else chunks.push(c);
        });
        res.on("end", () => {
          if (res.statusCode !== 201 && res.statusCode !== 200) {
            reject(new Error(`the member answered the SelfSubjectAccessReview with HTTP ${res.statusCode}`));
            return;
          }
          try {
            const answer = JSON.parse(Buffer.concat(chunks).toString("utf8")) as {
              status?: { allowed?: unknown };
            };
            resolve(answer.status?.allowed === true);
          } catch {
            reject(new Error("the member's SelfSubjectAccessReview answer is not JSON"));
          }
        });
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error("the SelfSubjectAccessReview timed out")));
    req.on("error", reject);
    req.end(body);
  });
}

/**
 * What the caller's own Impersonate-* headers (`raw` header pairs) come to:
 * none asked for, the headers of an identity the member let it act as, or a refusal.
 */
export async function callerImpersonation(
  raw: string[],
  caller: Caller,
  agent: Agent,
  cluster: string,
): Promise<{ ok: true; acting?: [string, string][] } | { ok: false; reason: StatusReason; message: string }> {
  const asked = requestedIdentity(raw);
  if ("error" in asked) return { ok: false, reason: "BadRequest", message: asked.error };
  if (!asked.identity) return { ok: true };
  const decision = await checkImpersonation(agent, caller, asked.identity, cluster);
  return decision.ok ? { ok: true, acting: requestedHeaders(asked.identity) } : decision;
}

/** The headers that make the member act as `identity` (extra keys percent-encoded, as kubectl sends them). */
export function requestedHeaders(identity: RequestedIdentity): [string, string][] {
  const pairs: [string, string][] = [["Impersonate-User", identity.user]];
  for (const g of identity.groups) pairs.push(["Impersonate-Group", g]);
  if (identity.uid !== undefined) pairs.push(["Impersonate-Uid", identity.uid]);
  for (const [key, values] of Object.entries(identity.extra)) {
    for (const v of values) pairs.push([`Impersonate-Extra-${encodeURIComponent(key)}`, v]);
  }
  return pairs;
}

/** The user and groups of impersonation headers from requestedHeaders, for the audit line. */
export function actingIdentity(
  acting: [string, string][] | undefined,
): { user: string; groups: string[] } | undefined {
  const user = acting?.find(([name]) => name === "Impersonate-User")?.[1];
  if (!acting || user === undefined) return undefined;
  return { user, groups: acting.filter(([name]) => name === "Impersonate-Group").map(([, g]) => g) };
}
