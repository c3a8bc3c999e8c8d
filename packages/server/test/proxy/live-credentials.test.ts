// LiveCredentials against a real FileStore: what a credential holds ends at
// its expiry (a timer), when its token leaves the store or its certificate
// serial is revoked (the sweep), or at once by id; releasing the last holding
// forgets the credential, and other credentials are untouched.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import type { AuthenticatedCaller } from "../../src/proxy/authenticate.js";
import { type CredentialEnd, LiveCredentials } from "../../src/proxy/live-credentials.js";
import { issueToken, tokenId } from "../../src/pki/tokens.js";
import { FileStore } from "../../src/store/file-store.js";

const dir = await mkdtemp(join(tmpdir(), "tether-live-"));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const store = await FileStore.open(join(dir, "state"));

async function userToken(
  user: string,
  ttlMs = 3600_000,
): Promise<{ hash: string; caller: AuthenticatedCaller }> {
  const { hash } = issueToken();
  const expiresAt = new Date(Date.now() + ttlMs);
  await store.addToken({ hash, kind: "user", user, clusters: ["*"], expiresAt: expiresAt.toISOString() });
  return {
    hash,
    caller: { user, groups: [], via: "token", expiresAt, credentialId: `token:${tokenId(hash)}` },
  };
}

/** A holding that records how it was ended. */
function holding(): { ended: CredentialEnd[]; end: (why: CredentialEnd) => void } {
  const ended: CredentialEnd[] = [];
  return { ended, end: (why) => ended.push(why) };
}

const until = async (cond: () => boolean) => {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 25));
};

t.test("a deleted token's holdings end at the next sweep; another token's stay", async (t) => {
  const live = new LiveCredentials(store, { sweepIntervalMs: 50 });
  t.teardown(() => live.close());
  const a = await userToken("alice");
  const b = await userToken("bob");
  const [h1, h2, h3] = [holding(), holding(), holding()];
  live.hold(a.caller, h1.end);
  live.hold(a.caller, h2.end);
  live.hold(b.caller, h3.end);
  t.equal(live.size, 2, "two credentials hold something");
  await store.deleteToken(a.hash);
  await until(() => h1.ended.length > 0 && h2.ended.length > 0);
  t.same([h1.ended, h2.ended, h3.ended], [["revoked"], ["revoked"], []]);
  t.equal(live.size, 1);
});

t.test("expiry ends the holdings by a timer", async (t) => {
  const live = new LiveCredentials(store, { sweepIntervalMs: 60_000 });
  t.teardown(() => live.close());
  const { caller } = await userToken("carol", 150);
  const h = holding();
  live.hold(caller, h.end);
  await until(() => h.ended.length > 0);
  t.same(h.ended, ["expired"], "ended without a sweep");
  t.equal(live.size, 0);
});

t.test("a revoked certificate serial ends its holdings at the next sweep", async (t) => {
  const live = new LiveCredentials(store, { sweepIntervalMs: 50 });
  t.teardown(() => live.close());
  await store.recordIssued("0abc", "m1", new Date(Date.now() + 3600_000).toISOString());
  const caller: AuthenticatedCaller = {
    user: "dave",
    groups: [],
    via: "certificate",
    credentialId: "cert:0abc",
  };
  const h = holding();
  live.hold(caller, h.end);
  await new Promise((r) => setTimeout(r, 150));
  t.same(h.ended, [], "not revoked: kept");
  await store.revokeCluster("m1");
  await until(() => h.ended.length > 0);
  t.same(h.ended, ["revoked"]);
});

t.test("end() by id is at once; a release forgets; no id holds nothing", async (t) => {
  const live = new LiveCredentials(store, { sweepIntervalMs: 60_000 });
  t.teardown(() => live.close());
  const { caller } = await userToken("erin");
  const h = holding();
  const release = live.hold(caller, h.end);
  release();
  t.equal(live.size, 0, "released: forgotten");
  live.hold(caller, h.end);
  t.equal(live.end([caller.credentialId!], "revoked"), 1);
  t.same(h.ended, ["revoked"]);
  live.hold({ user: "x", groups: [], via: "token" }, h.end);
  t.equal(live.size, 0, "a caller without a credential id holds nothing");
});

t.test(
  "an external credential the host no longer accepts ends at a sweep; a throwing check ends nothing",
  async (t) => {
    const live = new LiveCredentials(store, { sweepIntervalMs: 50 });
    t.teardown(() => live.close());
    let accepted = true;
    const sa: AuthenticatedCaller = {
      user: "system:serviceaccount:ns:sa",
      groups: [],
      via: "service-account",
      credentialId: "ext:aa",
      stillValid: async () => accepted,
    };
    const flaky: AuthenticatedCaller = {
      ...sa,
      credentialId: "ext:bb",
      stillValid: async () => {
        throw new Error("boom");
      },
    };
    const [h1, h2] = [holding(), holding()];
    live.hold(sa, h1.end);
    live.hold(flaky, h2.end);
    await new Promise((r) => setTimeout(r, 200));
    t.same(h1.ended, [], "still accepted");
    accepted = false;
    await until(() => h1.ended.length > 0);
    t.same(h1.ended, ["revoked"]);
    t.same(h2.ended, []);
    t.equal(live.size, 1);
  },
);
