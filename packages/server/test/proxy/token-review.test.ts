// TokenReviewer's cache and failure handling, and which tokens reach it, with an in-process host API that
// counts the reviews it is asked for (what the apiserver answers is tested
// against a real one in test/e2e/host-service-accounts.test.ts).
import type { IncomingMessage } from "node:http";
import t from "tap";
import { authenticate } from "../../src/proxy/authenticate.js";
import { externalCaller, MAX_EXTERNAL_TOKEN_BYTES } from "../../src/proxy/identity/identity-sources.js";
import { OidcVerifier } from "../../src/proxy/identity/oidc.js";
import type { Store } from "../../src/store/state-store.js";
import { IdentityUnavailableError } from "../../src/proxy/identity/identity-error.js";
import { type HostApi, TokenReviewer } from "../../src/proxy/identity/token-review.js";

/** An unsigned JWT: the reviewer reads `exp` only from tokens the host has accepted. */
const jwt = (claims: Record<string, unknown>) =>
  `${Buffer.from('{"alg":"RS256"}').toString("base64url")}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.sig`;

function host(accept: (token: string) => boolean | "down" | number) {
  const asked: string[] = [];
  const api: HostApi = {
    async call<T>(_m: string, _p: string, body?: unknown) {
      const token = (body as { spec: { token: string } }).spec.token;
      asked.push(token);
      await new Promise((r) => setImmediate(r));
      const verdict = accept(token);
      if (verdict === "down") throw new Error("connect ECONNREFUSED");
      if (typeof verdict === "number") return { status: verdict, body: {} as T };
      return {
        status: 201,
        body: {
          status: verdict
            ? { authenticated: true, user: { username: "system:serviceaccount:ns:sa", groups: ["g"] } }
            : { authenticated: false, error: "invalid" },
        } as T,
      };
    },
  };
  return { api, asked };
}

t.test("accepted tokens are believed for the TTL, then asked again; expiry from exp", async (t) => {
  let now = 1_000_000_000_000;
  const { api, asked } = host(() => true);
  const reviewer = new TokenReviewer({ api, cacheTtlMs: 10_000, now: () => now });
  const token = jwt({ exp: now / 1000 + 3600 });
  const caller = await reviewer.review(token);
  t.same(caller, {
    user: "system:serviceaccount:ns:sa",
    groups: ["g"],
    expiresAt: new Date(now + 3600_000).toISOString(),
  });
  await reviewer.review(token);
  t.equal(asked.length, 1, "cached");
  now += 10_001;
  await reviewer.review(token);
  t.equal(asked.length, 2, "asked again after the TTL");
});

t.test("the cache never outlives the token's exp", async (t) => {
  let now = 1_000_000_000_000;
  const { api, asked } = host(() => true);
  const reviewer = new TokenReviewer({ api, cacheTtlMs: 10_000, now: () => now });
  const token = jwt({ exp: now / 1000 + 2 });
  await reviewer.review(token);
  now += 2_001;
  await reviewer.review(token);
  t.equal(asked.length, 2);
});

t.test("refusals are not cached; one review for a burst of one new token", async (t) => {
  const { api, asked } = host((tok) => tok !== "bad");
  const reviewer = new TokenReviewer({ api });
  t.equal(await reviewer.review("bad"), undefined);
  t.equal(await reviewer.review("bad"), undefined);
  t.equal(asked.length, 2);
  const burst = await Promise.all(Array.from({ length: 10 }, () => reviewer.review(jwt({ sub: "x" }))));
  t.ok(burst.every((c) => c?.user === "system:serviceaccount:ns:sa"));
  t.equal(asked.length, 3, "one review for ten concurrent requests");
});

t.test("the cache holds at most maxCached tokens, the oldest goes first", async (t) => {
  const { api, asked } = host(() => true);
  const reviewer = new TokenReviewer({ api, maxCached: 2 });
  const [a, b, c] = [jwt({ n: 1 }), jwt({ n: 2 }), jwt({ n: 3 })];
  for (const tok of [a, b, c]) await reviewer.review(tok);
  await reviewer.review(c);
  await reviewer.review(b);
  t.equal(asked.length, 3, "b and c still cached");
  await reviewer.review(a);
  t.equal(asked.length, 4, "a was forgotten");
});

t.test("an unreachable or refusing host is IdentityUnavailableError, not a refusal", async (t) => {
  for (const verdict of ["down", 403, 500] as const) {
    const reviewer = new TokenReviewer({ api: host(() => verdict).api });
    await t.rejects(reviewer.review(jwt({})), IdentityUnavailableError, String(verdict));
  }
});

t.test(
  "routing: Tether tokens, non-JWTs, oversized and OIDC-issuer tokens never reach the host",
  async (t) => {
    const { api, asked } = host(() => true);
    const serviceAccounts = new TokenReviewer({ api });
    const oidc = new OidcVerifier({ issuerUrl: "https://127.0.0.1:9", clientId: "tether" });
    const sources = { serviceAccounts, oidc };
    const store = { findToken: async () => undefined } as unknown as Store;
    const req = (token: string) =>
      ({ headers: { authorization: `Bearer ${token}` }, socket: {} }) as IncomingMessage;
    t.equal(await authenticate(req(`tether_${"A".repeat(43)}`), store, sources), undefined);
    t.equal(await externalCaller("not-a-jwt", sources), undefined);
    t.equal(await externalCaller(jwt({ pad: "x".repeat(MAX_EXTERNAL_TOKEN_BYTES) }), sources), undefined);
    await t.rejects(externalCaller(jwt({ iss: "https://127.0.0.1:9" }), sources), /OIDC issuer/);
    t.equal(asked.length, 0, "the host was asked about none of them");
    const sa = await authenticate(req(jwt({ iss: "https://kubernetes.default.svc" })), store, sources);
    t.equal(sa?.via, "service-account");
    t.equal(asked.length, 1);
  },
);

t.test("after an outage the host is left alone for the backoff, then asked again", async (t) => {
  let now = 1_000_000_000_000;
  let down = true;
  const { api, asked } = host(() => (down ? "down" : true));
  const reviewer = new TokenReviewer({ api, outageBackoffMs: 2_000, now: () => now });
  await t.rejects(reviewer.review(jwt({ n: 1 })), IdentityUnavailableError);
  await t.rejects(reviewer.review(jwt({ n: 2 })), /failed a moment ago/);
  t.equal(asked.length, 1, "the second caller did not reach the host");
  down = false;
  now += 2_001;
  t.equal((await reviewer.review(jwt({ n: 2 })))?.user, "system:serviceaccount:ns:sa");
  t.equal(asked.length, 2);
});

t.test("only service accounts: the host's own OIDC or webhook users are not this source's", async (t) => {
  for (const username of ["alice", "system:admin", "system:serviceaccount:ns", "system:serviceaccount::sa"]) {
    const api: HostApi = {
      async call<T>() {
        return { status: 201, body: { status: { authenticated: true, user: { username } } } as T };
      },
    };
    t.equal(await new TokenReviewer({ api }).review(jwt({})), undefined, username);
  }
});

t.test("stillAccepted: asks the host once per TTL; a refusal is false, an outage is not", async (t) => {
  let now = 1_000_000_000_000;
  let verdict: boolean | "down" = true;
  const { api, asked } = host(() => verdict);
  const reviewer = new TokenReviewer({ api, cacheTtlMs: 10_000, now: () => now });
  const token = jwt({});
  t.equal((await reviewer.review(token)) !== undefined, true);
  verdict = false;
  t.equal(await reviewer.stillAccepted(token), true, "within the TTL: the cached answer");
  t.equal(asked.length, 1);
  now += 10_001;
  verdict = "down";
  t.equal(await reviewer.stillAccepted(token), true, "an unavailable host refuses nothing");
  now += 2_001;
  verdict = false;
  t.equal(await reviewer.stillAccepted(token), false, "the host refuses it now");
  t.equal(asked.length, 3);
});
