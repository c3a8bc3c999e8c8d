// Tether bearer tokens: high-entropy, only hashes stored, constant-time compare.
import { createHash } from "node:crypto";
import t from "tap";
import { hashToken, issueToken, isTokenHash, looksLikeToken } from "../../src/pki/tokens.js";

t.test("issueToken: tether_ + 32 random bytes base64url, with its sha256 hash", async (t) => {
  const { token, hash } = issueToken();
  t.match(token, /^tether_[A-Za-z0-9_-]{43}$/);
  t.equal(Buffer.from(token.slice("tether_".length), "base64url").length, 32);
  t.equal(hash, "sha256:" + createHash("sha256").update(token).digest("hex"));
  t.equal(hash, hashToken(token));
  t.ok(isTokenHash(hash));
  t.ok(looksLikeToken(token));
  t.notOk(looksLikeToken("tether_short"));
  t.notOk(isTokenHash(token), "a token is not a hash");
});

t.test("tokens are unique", async (t) => {
  const seen = new Set<string>();
  for (let i = 0; i < 1000; i++) seen.add(issueToken().token);
  t.equal(seen.size, 1000);
});

t.test("hashToken is deterministic and distinguishes tokens", async (t) => {
  t.equal(hashToken("a"), hashToken("a"));
  t.not(hashToken("a"), hashToken("b"));
  t.match(hashToken(""), /^sha256:[0-9a-f]{64}$/);
});
