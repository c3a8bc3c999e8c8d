// What every Store promises, whichever backend keeps the state: the same
// calls give the same answers and the same error codes. Run against FileStore
// (file-store-contract.test.ts) and against KubeStore on a real host cluster
// (test/e2e/kube-store-contract.test.ts). Each run gets a fresh, empty store.
import type { Test } from "tap";
import { hashToken, issueToken } from "../../src/pki/tokens.js";
import type { ClusterInput, SessionRecords, Store } from "../../src/store/state-store.js";

const hour = 3600_000;
const cluster = (name: string, extra: Partial<ClusterInput> = {}): ClusterInput => ({
  name,
  auth: "impersonate",
  labels: { env: "test" },
  allowedUsers: [],
  allowedGroups: ["admins"],
  createdAt: new Date().toISOString(),
  ...extra,
});
const later = (ms = hour) => new Date(Date.now() + ms).toISOString();

export async function storeContract(t: Test, open: () => Promise<Store>): Promise<void> {
  const store = await open();

  await t.test("clusters: add once, read back, update keeps the uid, remove", async (t) => {
    t.equal(await store.addCluster(cluster("alpha")), true);
    t.equal(await store.addCluster(cluster("alpha", { auth: "passthrough" })), false, "the name is taken");
    const got = await store.getCluster("alpha");
    t.match(got, { name: "alpha", auth: "impersonate", labels: { env: "test" }, allowedGroups: ["admins"] });
    t.match(got?.uid, /^[0-9a-f-]{36}$/, "a uid is assigned");
    await store.putCluster(cluster("alpha", { auth: "passthrough" }));
    const updated = await store.getCluster("alpha");
    t.equal(updated?.auth, "passthrough");
    t.equal(updated?.uid, got?.uid, "an update keeps the incarnation");
    t.same(
      (await store.listClusters()).map((c) => c.name),
      ["alpha"],
    );
    t.equal(await store.deleteCluster("alpha"), true);
    t.equal(await store.deleteCluster("alpha"), false);
    t.equal(await store.getCluster("alpha"), undefined);
    t.equal(await store.addCluster(cluster("alpha")), true, "the name can be registered again");
    t.not((await store.getCluster("alpha"))?.uid, got?.uid, "as a new incarnation");
  });

  await t.test("clusters: exposed services' access lists are kept, replaced and dropped", async (t) => {
    const services = {
      prometheus: { allowedUsers: ["alice"], allowedGroups: ["sre", "ops"] },
      "ks-apiserver": { allowedUsers: [], allowedGroups: ["admins"] },
    };
    t.equal(await store.addCluster(cluster("svc", { services })), true);
    t.same((await store.getCluster("svc"))?.services, services);
    // Reads share the store's copy, frozen: a caller that tries to widen an access list fails, the store is unchanged.
    const shared = await store.getCluster("svc");
    t.throws(() => (shared!.services!.prometheus!.allowedUsers as string[]).push("mallory"), TypeError);
    t.same((await store.getCluster("svc"))?.services, services, "the store's copy is unchanged");
    await store.putCluster(cluster("svc", { services: { prometheus: services.prometheus } }));
    t.same((await store.getCluster("svc"))?.services, { prometheus: services.prometheus }, "replaced");
    await store.putCluster(cluster("svc"));
    t.equal((await store.getCluster("svc"))?.services, undefined, "dropped");
    await t.rejects(
      store.putCluster(cluster("svc", { services: { "Bad Name": { allowedUsers: [], allowedGroups: [] } } })),
      { code: "ERR_TETHER_INVALID_RECORD" },
    );
    await t.rejects(
      store.putCluster(cluster("svc", { services: { ok: { allowedUsers: "alice" } as never } })),
      { code: "ERR_TETHER_INVALID_RECORD" },
    );
    t.equal(await store.deleteCluster("svc"), true);
  });

  await t.test("invalid records are refused with the same code", async (t) => {
    await t.rejects(store.addCluster(cluster("Not_A_Name")), { code: "ERR_TETHER_INVALID_CLUSTER_NAME" });
    await t.rejects(store.addCluster(cluster("beta", { auth: "root" as never })), {
      code: "ERR_TETHER_INVALID_RECORD",
    });
    await t.rejects(store.addToken({ hash: "nope", kind: "user", user: "u", expiresAt: later() }), {
      code: "ERR_TETHER_INVALID_RECORD",
    });
    t.equal(await store.getCluster("beta"), undefined, "nothing was written");
  });

  await t.test("tokens: found until they expire, deleted on request", async (t) => {
    const user = issueToken();
    await store.addToken({
      hash: user.hash,
      kind: "user",
      user: "alice",
      groups: ["admins"],
      clusters: ["alpha"],
      expiresAt: later(),
    });
    t.match(await store.findToken(user.hash), { kind: "user", user: "alice", clusters: ["alpha"] });
    const found = await store.findToken(user.hash);
    t.throws(() => (found!.clusters as string[]).push("*"), TypeError, "a found token is frozen");
    t.match(await store.findToken(user.hash), { clusters: ["alpha"] }, "and the store's copy unchanged");
    t.equal(await store.findToken(hashToken("unknown")), undefined);
    await t.rejects(
      store.addToken({ hash: user.hash, kind: "user", user: "mallory", expiresAt: later() }),
      { code: "ERR_TETHER_INVALID_RECORD" },
      "a hash is never reused",
    );
    const old = issueToken();
    await store.addToken({ hash: old.hash, kind: "user", user: "bob", expiresAt: later(-1000) });
    t.equal(await store.findToken(old.hash), undefined, "an expired token is not found");
    t.match(
      await store.findToken(old.hash, { includeExpired: true }),
      { user: "bob" },
      "unless asked for, to say in a 401 that it expired",
    );
    const ancient = issueToken();
    await store.addToken({ hash: ancient.hash, kind: "user", user: "eve", expiresAt: later(-2 * 86400_000) });
    t.equal(
      await store.findToken(ancient.hash, { includeExpired: true }),
      undefined,
      "not once it expired over a day ago",
    );
    t.notOk(
      (await store.listTokens()).some((r) => r.hash === old.hash),
      "nor listed",
    );
    t.equal(await store.deleteToken(user.hash), true);
    t.equal(await store.findToken(user.hash), undefined);
    t.equal(await store.deleteToken(user.hash), false);
  });

  await t.test("a join token is consumed once, for its own cluster only", async (t) => {
    const join = issueToken();
    await store.addToken({ hash: join.hash, kind: "join", cluster: "alpha", expiresAt: later() });
    t.equal(await store.consumeJoinToken(join.hash, "gamma"), undefined, "not for another cluster");
    const used = await Promise.all([
      store.consumeJoinToken(join.hash, "alpha"),
      store.consumeJoinToken(join.hash, "alpha"),
    ]);
    t.equal(used.filter((u) => u !== undefined).length, 1, "two at once: one winner");
    t.equal(await store.consumeJoinToken(join.hash, "alpha"), undefined, "and never again");
  });

  await t.test("revoking a cluster revokes every serial issued for it", async (t) => {
    await store.recordIssued("0a1b", "alpha", later());
    await store.recordIssued("0a1c", "alpha", later());
    await store.recordIssued("0d0e", "delta", later());
    t.equal(await store.isRevoked("0a1b"), false);
    await store.revokeCluster("alpha");
    t.equal(await store.isRevoked("0a1b"), true);
    t.equal(await store.isRevoked("0A1C"), true, "serials compare without case");
    t.equal(await store.isRevoked("0d0e"), false, "other clusters keep theirs");
  });

  await t.test("sessionRecords: every cluster and revocation in one read, held still", async (t) => {
    // A watch-backed store learns of some writes from its watch: give it a few seconds.
    const settled = async (ok: (r: SessionRecords) => boolean) => {
      for (let i = 0; i < 100 && !ok(await store.sessionRecords()); i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      return store.sessionRecords();
    };
    await store.addCluster(cluster("epsilon"));
    await store.recordIssued("0e01", "epsilon", later());
    const uid = (await store.getCluster("epsilon"))?.uid;
    const before = await settled((r) => r.cluster("epsilon") !== undefined);
    t.match(before.cluster("epsilon"), { name: "epsilon", uid, createdAt: String });
    t.equal(before.cluster("nobody"), undefined, "an unregistered name");
    t.equal(before.cluster("__proto__"), undefined, "nor a name of Object's");
    t.equal(before.isRevoked("0e01"), false);
    t.equal(before.isRevoked("0a1b"), true, "alpha's, revoked above");
    t.equal(before.isRevoked("000A1B"), true, "serials compare as isRevoked compares them");
    t.equal(before.isRevoked("not-hex"), false, "not a serial: nothing revoked");
    t.equal(before.isRevoked(""), false);
    await store.revokeCluster("epsilon");
    await store.deleteCluster("epsilon");
    const after = await settled((r) => r.cluster("epsilon") === undefined && r.isRevoked("0e01"));
    t.equal(after.cluster("epsilon"), undefined, "removed");
    t.equal(after.isRevoked("0e01"), true, "revoked");
    t.ok(before.cluster("epsilon") && !before.isRevoked("0e01"), "an earlier view does not change under it");
  });

  await t.test("changeMark moves when a cluster comes, goes or is revoked", async (t) => {
    // A watch-backed store learns of some writes from its watch: give it a few seconds.
    const moves = async (from: string, what: string) => {
      for (let i = 0; i < 100 && (await store.changeMark()) === from; i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      t.not(await store.changeMark(), from, what);
      return store.changeMark();
    };
    // It may also move for other writes (a spare full check costs little); never missing one is the promise.
    let mark = await store.changeMark();
    await store.addCluster(cluster("mark"));
    mark = await moves(mark, "a new cluster");
    await store.recordIssued("0f01", "mark", later());
    mark = await store.changeMark();
    await store.revokeCluster("mark");
    mark = await moves(mark, "a revocation");
    await store.deleteCluster("mark");
    await moves(mark, "a removed cluster");
  });

  await t.test("the server URL and the admin credential", async (t) => {
    t.equal(await store.serverUrl(), undefined);
    await store.recordServerUrl("https://tether.example:8443");
    t.equal(await store.serverUrl(), "https://tether.example:8443");
    t.equal(await store.adminCredential(), undefined);
    t.equal(await store.saveAdminCredential("first"), "first");
    t.equal(await store.saveAdminCredential("second"), "first", "an existing credential is kept");
    t.equal(await store.saveAdminCredential("third", "stale"), "first", "replace only what is still there");
    t.equal(await store.saveAdminCredential("third", "first"), "third");
    t.equal(await store.adminCredential(), "third");
  });

  await t.test("the CA is created once and then the same", async (t) => {
    const ca = await store.loadOrCreateCa();
    const again = await store.loadOrCreateCa();
    t.equal(again.certPem, ca.certPem);
    const serving = await store.loadOrCreateServingCertificate({
      dnsNames: ["localhost"],
      ips: ["127.0.0.1"],
    });
    const same = await store.loadOrCreateServingCertificate({ dnsNames: ["localhost"], ips: ["127.0.0.1"] });
    t.equal(same.certPem, serving.certPem, "a usable serving certificate is kept");
    const renamed = await store.loadOrCreateServingCertificate({ dnsNames: ["tether.example"], ips: [] });
    t.not(renamed.certPem, serving.certPem, "new names, new certificate");
  });
}
