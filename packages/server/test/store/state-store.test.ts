// FileStore: round-trips, file modes, join tokens consumed once (in-process and
// across processes), expiry, revocation, and crash safety under kill -9.
//
// This file doubles as the child process of the multi-process tests: with
// TETHER_STORE_CHILD set it runs a write loop instead of tests.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { caHashOf } from "@tether/common";
import { hashToken, issueToken } from "../../src/pki/tokens.js";
import { defaultStateDir, FileStore } from "../../src/store/file-store.js";
import type { ClusterInput, TokenRecord } from "../../src/store/state-store.js";

const SELF = fileURLToPath(import.meta.url);
const FAR = "2999-01-01T00:00:00.000Z";
const PAST = "2000-01-01T00:00:00.000Z";

const cluster = (name: string, extra: Partial<ClusterInput> = {}): ClusterInput => ({
  name,
  auth: "impersonate",
  labels: {},
  allowedUsers: [],
  allowedGroups: [],
  createdAt: "2026-01-01T00:00:00.000Z",
  ...extra,
});
const joinToken = (c: string, expiresAt = FAR) => {
  const { token, hash } = issueToken();
  return { token, record: { hash, kind: "join", cluster: c, expiresAt } satisfies TokenRecord };
};

// The crash loop's operations: op j writes item floor(j/3) to clusters, tokens, certs in turn.
const serialOf = (i: number) => (0x100000 + i).toString(16);
const tokenHashOf = (i: number) => hashToken(`crash-${i}`);

if (process.env.TETHER_STORE_CHILD) {
  const [mode, dir, arg] = process.env.TETHER_STORE_CHILD.split("|") as [string, string, string];
  const store = await FileStore.open(dir);
  if (mode === "crash") {
    // Resume after the last complete operation, then write forever.
    const k = (await store.listClusters()).length;
    let j = 3 * k;
    if (k > 0 && !(await store.findToken(tokenHashOf(k - 1)))) j = 3 * (k - 1) + 1;
    else if (k > 0 && !(await readCerts(dir))[serialOf(k - 1)]) j = 3 * (k - 1) + 2;
    process.stdout.write("ready\n");
    for (; ; j++) {
      const i = Math.floor(j / 3);
      if (j % 3 === 0) await store.putCluster(cluster(`c${i}`));
      else if (j % 3 === 1)
        await store.addToken({ hash: tokenHashOf(i), kind: "user", user: `u${i}`, expiresAt: FAR });
      else await store.recordIssued(serialOf(i), `c${i}`, FAR);
    }
  } else if (mode === "consume") {
    const won = await store.consumeJoinToken(arg, "race");
    process.stdout.write(won ? "won" : "lost");
  } else if (mode === "add") {
    for (let i = 0; i < 25; i++) {
      await store.addToken({ hash: hashToken(`${arg}-${i}`), kind: "user", user: arg, expiresAt: FAR });
    }
  }
} else {
  await runTests();
}

async function readCerts(dir: string): Promise<Record<string, unknown>> {
  try {
    return JSON.parse(await readFile(join(dir, "certs.json"), "utf8")).issued;
  } catch {
    return {};
  }
}

function child(env: string): ChildProcess {
  return spawn(process.execPath, ["--import=tsx", SELF], {
    env: { ...process.env, TETHER_STORE_CHILD: env },
    stdio: ["ignore", "pipe", "inherit"],
  });
}

function output(cp: ChildProcess): Promise<{ code: number | null; stdout: string }> {
  let stdout = "";
  cp.stdout!.on("data", (d) => {
    stdout += d;
  });
  return new Promise((resolve) => cp.on("close", (code) => resolve({ code, stdout })));
}

async function runTests(): Promise<void> {
  const { default: t } = await import("tap");

  t.test("defaultStateDir: $TETHER_STATE_DIR, else ./.tether", async (t) => {
    const saved = process.env.TETHER_STATE_DIR;
    t.teardown(() => {
      if (saved === undefined) delete process.env.TETHER_STATE_DIR;
      else process.env.TETHER_STATE_DIR = saved;
    });
    delete process.env.TETHER_STATE_DIR;
    t.equal(defaultStateDir(), join(process.cwd(), ".tether"));
    process.env.TETHER_STATE_DIR = "/var/lib/tether";
    t.equal(defaultStateDir(), "/var/lib/tether");
  });

  t.test("open creates the directory 0700 and refuses unusable ones clearly", async (t) => {
    const base = t.testdir({ file: "x" });
    const dir = join(base, "a", "state");
    const store = await FileStore.open(dir);
    t.equal(store.dir, dir);
    t.equal((await stat(dir)).mode & 0o777, 0o700);
    const err = await FileStore.open(join(base, "file", "state")).catch((e: Error & { code?: string }) => e);
    t.match(err, { code: "ERR_TETHER_STATE_DIR", message: /--state-dir/ });
    t.match((err as Error).message, join(base, "file", "state"));
  });

  t.test("CA: created once, ca.crt 0644 + ca.key 0600, loaded afterwards", async (t) => {
    const dir = t.testdir();
    const store = await FileStore.open(dir);
    const ca = await store.loadOrCreateCa();
    t.equal((await stat(join(dir, "ca.key"))).mode & 0o777, 0o600);
    t.equal((await stat(join(dir, "ca.crt"))).mode & 0o777, 0o644);
    t.equal(await readFile(join(dir, "ca.crt"), "utf8"), ca.certPem);
    const again = await (await FileStore.open(dir)).loadOrCreateCa();
    t.equal(again.caHash, ca.caHash);
    t.equal(caHashOf(await readFile(join(dir, "ca.crt"), "utf8")), ca.caHash);
    // Two concurrent first starts agree on one CA.
    const dir2 = t.testdir();
    const s2 = await FileStore.open(dir2);
    const [a, b] = await Promise.all([s2.loadOrCreateCa(), (await FileStore.open(dir2)).loadOrCreateCa()]);
    t.equal(a.caHash, b.caHash);
  });

  t.test(
    "CA: a key without a certificate (crash between writes) is replaced; a certificate without key is an error",
    async (t) => {
      const dir = t.testdir({ "ca.key": "leftover" });
      const store = await FileStore.open(dir);
      const ca = await store.loadOrCreateCa();
      t.equal(await readFile(join(dir, "ca.key"), "utf8"), ca.keyPem());
      const dir2 = t.testdir({ "ca.crt": ca.certPem });
      await t.rejects((await FileStore.open(dir2)).loadOrCreateCa(), {
        code: "ERR_TETHER_STATE_CORRUPT",
        message: /ca\.key/,
      });
    },
  );

  t.test("serving certificate: kept while valid for the same names, reissued otherwise", async (t) => {
    const dir = t.testdir();
    const store = await FileStore.open(dir);
    const names = { dnsNames: ["tether.example.com", "localhost"], ips: ["127.0.0.1", "::1"] };
    const s1 = await store.loadOrCreateServingCertificate(names);
    t.equal((await stat(join(dir, "server.key"))).mode & 0o777, 0o600);
    t.equal((await stat(join(dir, "server.crt"))).mode & 0o777, 0o644);
    const ca = await store.loadOrCreateCa();
    const cert = new X509Certificate(s1.certPem);
    t.ok(cert.checkIssued(new X509Certificate(ca.certPem)));
    t.ok(cert.verify(new X509Certificate(ca.certPem).publicKey));
    const same = await store.loadOrCreateServingCertificate({
      dnsNames: ["LOCALHOST", "tether.example.com"],
      ips: ["0:0:0:0:0:0:0:1", "127.0.0.1"],
    });
    t.equal(same.certPem, s1.certPem, "same names (any order/spelling): kept");
    t.equal(same.keyPem, s1.keyPem);
    const changed = await store.loadOrCreateServingCertificate({
      dnsNames: ["localhost"],
      ips: ["127.0.0.1"],
    });
    t.not(changed.certPem, s1.certPem, "names changed: reissued");
    t.not(changed.keyPem, s1.keyPem);
    // Less than a third of its lifetime left: reissued.
    const old = await ca.issueServerCertificate({
      dnsNames: ["localhost"],
      ips: ["127.0.0.1"],
      ttlMs: 60_000,
    });
    await writeFile(join(dir, "server.crt"), old.certPem);
    await writeFile(join(dir, "server.key"), old.keyPem!);
    const renewed = await store.loadOrCreateServingCertificate({
      dnsNames: ["localhost"],
      ips: ["127.0.0.1"],
    });
    t.not(renewed.certPem, old.certPem);
    // Key does not match the certificate (crash between the two writes): reissued.
    await writeFile(join(dir, "server.key"), s1.keyPem);
    const fixed = await store.loadOrCreateServingCertificate({ dnsNames: ["localhost"], ips: ["127.0.0.1"] });
    t.not(fixed.certPem, renewed.certPem);
    t.ok(
      new X509Certificate(fixed.certPem).checkPrivateKey(
        (await import("node:crypto")).createPrivateKey(fixed.keyPem),
      ),
    );
  });

  t.test("putClusters registers many in one write, keeping incarnations, all or nothing", async (t) => {
    const dir = t.testdir();
    const store = await FileStore.open(dir);
    await store.putCluster(cluster("a"));
    const uidA = (await store.getCluster("a"))?.uid;
    await store.putClusters([cluster("a", { labels: { env: "prod" } }), cluster("b"), cluster("c")]);
    t.same(
      (await store.listClusters()).map((c) => c.name),
      ["a", "b", "c"],
    );
    t.equal((await store.getCluster("a"))?.uid, uidA, "a re-put keeps its incarnation");
    t.same((await store.getCluster("a"))?.labels, { env: "prod" });
    t.not((await store.getCluster("b"))?.uid, (await store.getCluster("c"))?.uid, "each a new incarnation");
    await t.rejects(store.putClusters([cluster("d"), cluster("Bad_Name")]), {
      code: "ERR_TETHER_INVALID_CLUSTER_NAME",
    });
    t.equal(await store.getCluster("d"), undefined, "a bad record refuses the whole batch");
  });

  t.test("clusters: put, get, list, delete, validation, round-trip through a new instance", async (t) => {
    const dir = t.testdir();
    const store = await FileStore.open(dir);
    t.same(await store.listClusters(), []);
    const b = cluster("b", {
      auth: "passthrough",
      labels: { env: "prod" },
      allowedUsers: ["alice"],
      allowedGroups: ["ops"],
    });
    await store.putCluster(b);
    await store.putCluster(cluster("a"));
    t.same(await store.getCluster("b"), { ...b, uid: (await store.getCluster("b"))?.uid });
    t.match((await store.getCluster("b"))?.uid, /^[0-9a-f-]{36}$/, "the store gave it an incarnation");
    t.same(
      (await store.listClusters()).map((c) => c.name),
      ["a", "b"],
    );
    const fresh = await FileStore.open(dir);
    t.same(await fresh.getCluster("b"), await store.getCluster("b"));
    await store.putCluster({ ...b, labels: { env: "staging" } });
    t.same((await fresh.getCluster("b"))?.labels, { env: "staging" }, "another instance sees the update");
    // Reads hand out the store's own copy, frozen (no clone per request): a caller cannot change it.
    const got = await store.getCluster("b");
    t.throws(() => {
      (got!.labels as Record<string, string>).env = "mutated";
    }, TypeError);
    t.throws(() => (got!.allowedUsers as string[]).push("mallory"), TypeError);
    t.throws(() => {
      (got as { auth: string }).auth = "passthrough";
    }, TypeError);
    t.same((await store.getCluster("b"))?.labels, { env: "staging" }, "the store's copy is unchanged");
    t.same((await store.getCluster("b"))?.allowedUsers, b.allowedUsers);
    t.equal(await store.deleteCluster("b"), true);
    t.equal(await store.deleteCluster("b"), false);
    t.equal(await store.getCluster("b"), undefined);
    t.equal(await store.getCluster("__proto__"), undefined);
    await t.rejects(store.putCluster(cluster("Bad_Name")), { code: "ERR_TETHER_INVALID_CLUSTER_NAME" });
    await t.rejects(store.putCluster({ ...cluster("c"), auth: "root" as never }), {
      code: "ERR_TETHER_INVALID_RECORD",
    });
    t.equal((await stat(join(dir, "clusters.json"))).mode & 0o777, 0o600);
    t.match(JSON.parse(await readFile(join(dir, "clusters.json"), "utf8")), {
      version: 1,
      clusters: { a: { name: "a" } },
    });
  });

  t.test(
    "incarnations: a new uid per registration, kept by updates, given to clusters from before",
    async (t) => {
      const dir = t.testdir();
      const store = await FileStore.open(dir);
      t.equal(await store.addCluster(cluster("m1", { uid: "00000000-0000-4000-8000-000000000000" })), true);
      const first = (await store.getCluster("m1"))!.uid;
      t.match(first, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      t.not(first, "00000000-0000-4000-8000-000000000000", "a caller cannot choose the uid");
      await store.putCluster({ ...cluster("m1"), labels: { env: "prod" } });
      t.equal((await store.getCluster("m1"))!.uid, first, "an update keeps the incarnation");
      await store.deleteCluster("m1");
      await store.addCluster(cluster("m1"));
      t.not((await store.getCluster("m1"))!.uid, first, "registered again: a new incarnation");
      await t.rejects(store.putCluster(cluster("m2", { uid: "NOT-A-UUID" })), {
        code: "ERR_TETHER_INVALID_RECORD",
      });

      // clusters.json as Tether wrote it before incarnations existed.
      const old = t.testdir({
        "clusters.json": JSON.stringify({ version: 1, clusters: { legacy: cluster("legacy") } }),
      });
      const upgraded = await FileStore.open(old);
      const uid = (await upgraded.getCluster("legacy"))?.uid;
      t.match(uid, /^[0-9a-f-]{36}$/, "opening the state gives an old cluster an incarnation");
      t.equal((await (await FileStore.open(old)).getCluster("legacy"))?.uid, uid, "once");
      t.equal(
        JSON.parse(await readFile(join(old, "clusters.json"), "utf8")).clusters.legacy.uid,
        uid,
        "written to the file",
      );
    },
  );

  t.test("tokens: only hashes stored, 0600, expired ones not found", async (t) => {
    const dir = t.testdir();
    const store = await FileStore.open(dir);
    const { token, hash } = issueToken();
    const user: TokenRecord = {
      hash,
      kind: "user",
      user: "alice",
      groups: ["dev"],
      clusters: ["*"],
      expiresAt: FAR,
    };
    await store.addToken(user);
    t.same(await store.findToken(hash), user);
    const found = await store.findToken(hash);
    t.throws(() => (found!.groups as string[]).push("system:masters"), TypeError, "a found token is frozen");
    t.same((await store.findToken(hash))?.groups, ["dev"], "and the store's copy unchanged");
    t.equal(await store.findToken(hashToken("other")), undefined);
    const text = await readFile(join(dir, "tokens.json"), "utf8");
    t.notMatch(text, token, "the token itself is never written");
    t.equal((await stat(join(dir, "tokens.json"))).mode & 0o777, 0o600);
    await t.rejects(store.addToken(user), { code: "ERR_TETHER_INVALID_RECORD" }, "duplicate hash");
    await t.rejects(
      store.addToken({ ...user, hash: token }),
      { code: "ERR_TETHER_INVALID_RECORD" },
      "a raw token",
    );
    await t.rejects(store.addToken({ hash: hashToken("j"), kind: "join", expiresAt: FAR }), {
      code: "ERR_TETHER_INVALID_RECORD",
    });
    const old = { hash: hashToken("old"), kind: "user" as const, user: "bob", expiresAt: PAST };
    await store.addToken(old);
    t.equal(await store.findToken(old.hash), undefined, "expired: not found");
    t.notMatch(await readFile(join(dir, "tokens.json"), "utf8"), old.hash, "and pruned on write");
    t.same(
      (await store.listTokens()).map((r) => r.hash),
      [hash],
    );
    t.equal(await store.deleteToken(hash), true);
    t.equal(await store.findToken(hash), undefined);
  });

  t.test("join tokens: consumed once, for their cluster only, not when expired", async (t) => {
    const store = await FileStore.open(t.testdir());
    const { record } = joinToken("m1");
    await store.addToken(record);
    t.equal(await store.consumeJoinToken(record.hash, "m2"), undefined, "wrong cluster");
    const used = await store.consumeJoinToken(record.hash, "m1");
    t.match(used, { hash: record.hash, kind: "join", cluster: "m1", usedAt: String });
    t.equal(await store.consumeJoinToken(record.hash, "m1"), undefined, "second use");
    t.match(await store.findToken(record.hash), { usedAt: String }, "findToken shows it used");
    const expiredJoin = joinToken("m1", PAST).record;
    await store.addToken(expiredJoin);
    t.equal(await store.consumeJoinToken(expiredJoin.hash, "m1"), undefined, "expired");
    const userTok = { hash: hashToken("u"), kind: "user" as const, user: "u", cluster: "m1", expiresAt: FAR };
    await store.addToken(userTok);
    t.equal(await store.consumeJoinToken(userTok.hash, "m1"), undefined, "not a join token");
    t.equal(await store.consumeJoinToken("sha256:nope", "m1"), undefined);
  });

  t.test("join tokens: concurrent consumes, exactly one wins (same instance, two instances)", async (t) => {
    const dir = t.testdir();
    const a = await FileStore.open(dir);
    const b = await FileStore.open(dir);
    for (let round = 0; round < 5; round++) {
      const { record } = joinToken("m1");
      await a.addToken(record);
      const results = await Promise.all([
        a.consumeJoinToken(record.hash, "m1"),
        a.consumeJoinToken(record.hash, "m1"),
        b.consumeJoinToken(record.hash, "m1"),
      ]);
      t.equal(results.filter(Boolean).length, 1, `round ${round}`);
    }
  });

  t.test("join tokens: concurrent consumes from separate processes, exactly one wins", async (t) => {
    const dir = t.testdir();
    const store = await FileStore.open(dir);
    const { record } = joinToken("race");
    await store.addToken(record);
    const results = await Promise.all(
      Array.from({ length: 4 }, () => output(child(`consume|${dir}|${record.hash}`))),
    );
    t.same(
      results.map((r) => r.code),
      [0, 0, 0, 0],
    );
    t.equal(results.filter((r) => r.stdout === "won").length, 1);
    t.equal(results.filter((r) => r.stdout === "lost").length, 3);
  });

  t.test("the lock file serialises writers across processes: no lost updates", async (t) => {
    const dir = t.testdir();
    await FileStore.open(dir);
    const names = ["p0", "p1", "p2", "p3"];
    const results = await Promise.all(names.map((n) => output(child(`add|${dir}|${n}`))));
    t.same(
      results.map((r) => r.code),
      [0, 0, 0, 0],
    );
    const store = await FileStore.open(dir);
    t.equal((await store.listTokens()).length, 100);
    t.notOk(
      (await readdir(dir)).some((f) => f.includes("lock") || f.endsWith(".tmp")),
      "no lock or temp left",
    );
  });

  t.test("revocation: all serials of a cluster, and only those", async (t) => {
    const dir = t.testdir();
    const store = await FileStore.open(dir);
    await store.recordIssued("0A1B", "m1", FAR);
    await store.recordIssued("0c2d", "m1", FAR);
    await store.recordIssued("0e3f", "m2", FAR);
    t.equal(await store.isRevoked("0a1b"), false);
    await store.revokeCluster("m1");
    t.equal(await store.isRevoked("0a1b"), true, "case-insensitive");
    t.equal(await store.isRevoked("0A1B"), true);
    t.equal(await store.isRevoked("0C2D"), true);
    t.equal(await store.isRevoked("0e3f"), false);
    t.equal(await store.isRevoked("ffff"), false, "unknown serial");
    t.equal(await store.isRevoked("not hex"), false);
    t.equal(await (await FileStore.open(dir)).isRevoked("0a1b"), true, "persisted");
    await store.recordIssued("0e40", "m1", FAR);
    t.equal(await store.isRevoked("0e40"), false, "a certificate issued after revocation is valid");
    await t.rejects(store.recordIssued("xyz", "m1", FAR), { code: "ERR_TETHER_INVALID_RECORD" });
    t.equal((await stat(join(dir, "certs.json"))).mode & 0o777, 0o600);
  });

  t.test("corrupt, foreign and newer documents are reported, not overwritten", async (t) => {
    const dir = t.testdir({
      "clusters.json": "{ torn",
      "tokens.json": JSON.stringify({ hello: 1 }),
      "certs.json": JSON.stringify({ version: 9, issued: {}, revoked: {} }),
    });
    const store = await FileStore.open(dir);
    await t.rejects(store.listClusters(), { code: "ERR_TETHER_STATE_CORRUPT", message: /clusters\.json/ });
    await t.rejects(store.putCluster(cluster("a")), { code: "ERR_TETHER_STATE_CORRUPT" });
    t.equal(await readFile(join(dir, "clusters.json"), "utf8"), "{ torn");
    await t.rejects(store.findToken(hashToken("x")), {
      code: "ERR_TETHER_STATE_CORRUPT",
      message: /tokens\.json/,
    });
    await t.rejects(store.isRevoked("01"), { code: "ERR_TETHER_STATE_VERSION" });
  });

  t.test(
    "stale locks (dead pid, our own pid from a previous life) and leftover temp files are tolerated",
    async (t) => {
      const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], {
        encoding: "utf8",
      }).stdout;
      const { hostname } = await import("node:os");
      for (const pid of [Number(dead), process.pid]) {
        const dir = t.testdir({
          "state.lock": JSON.stringify({ pid, hostname: hostname(), nonce: "x", since: PAST }),
          [`.clusters.json.${dead}.0123456789abcdef.tmp`]: "partial",
        });
        const store = await FileStore.open(dir);
        t.notOk(
          (await readdir(dir)).some((f) => f.endsWith(".tmp")),
          "temp file of a dead writer removed",
        );
        await store.putCluster(cluster("a"));
        t.ok(await store.getCluster("a"), `lock of pid ${pid === process.pid ? "self" : "dead"} broken`);
        t.same(await readdir(dir), ["clusters.json"]);
      }
    },
  );

  t.test("a live foreign lock makes writers wait, then fail clearly", async (t) => {
    const { hostname } = await import("node:os");
    const holder = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
    t.teardown(() => {
      holder.kill("SIGKILL");
    });
    const dir = t.testdir({
      "state.lock": JSON.stringify({ pid: holder.pid, hostname: hostname(), nonce: "x", since: PAST }),
    });
    const store = await FileStore.open(dir, { lockTimeoutMs: 200 });
    await t.rejects(store.putCluster(cluster("a")), {
      code: "ERR_TETHER_STATE_LOCKED",
      message: new RegExp(`process ${holder.pid}`),
    });
    t.equal(await store.getCluster("a"), undefined);
    t.same(await store.listClusters(), [], "reads do not need the lock");
  });

  t.test("crash safety: kill -9 at random moments leaves a consistent prefix of the writes", async (t) => {
    const dir = t.testdir();
    let lastOps = 0;
    for (let iteration = 0; iteration < 20; iteration++) {
      const cp = child(`crash|${dir}|`);
      const done = output(cp);
      // Kill after the child has opened the store, at a random point of its write loop.
      await new Promise<void>((resolve) => {
        let seen = "";
        cp.stdout!.on("data", (d) => {
          seen += d;
          if (seen.includes("ready")) resolve();
        });
        cp.on("close", () => resolve());
      });
      await new Promise((r) => setTimeout(r, Math.random() * 150));
      cp.kill("SIGKILL");
      const { code } = await done;
      t.equal(code, null, `iteration ${iteration}: killed, not exited`);

      // Every file parses and holds a prefix: clusters c0..c(k-1), tokens 0..m-1, certs 0..n-1,
      // written in the order cluster i, token i, cert i.
      for (const f of ["clusters.json", "tokens.json", "certs.json"]) {
        try {
          JSON.parse(await readFile(join(dir, f), "utf8"));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "ENOENT") t.fail(`${f} does not parse: ${err}`);
        }
      }
      const store = await FileStore.open(dir);
      const clusters = (await store.listClusters()).map((c) => c.name);
      const k = clusters.length;
      t.same(new Set(clusters), new Set(Array.from({ length: k }, (_, i) => `c${i}`)), "clusters: a prefix");
      const tokens = new Set((await store.listTokens()).map((r) => r.hash));
      const m = tokens.size;
      t.same(tokens, new Set(Array.from({ length: m }, (_, i) => tokenHashOf(i))), "tokens: a prefix");
      const certs = await readCerts(dir);
      const n = Object.keys(certs).length;
      t.same(
        new Set(Object.keys(certs)),
        new Set(Array.from({ length: n }, (_, i) => serialOf(i))),
        "certs: a prefix",
      );
      t.ok(k >= m && m >= n && n >= k - 1, `consistent across files (k=${k} m=${m} n=${n})`);
      const ops = k + m + n;
      t.ok(ops >= lastOps, "no completed write was lost");
      lastOps = ops;
      // The store is usable straight away: stale lock broken, temp files cleaned.
      await store.putCluster(cluster("probe"));
      t.ok(await store.deleteCluster("probe"));
      t.notOk(
        (await readdir(dir)).some((f) => f.endsWith(".tmp")),
        "no temp files left",
      );
    }
    t.ok(lastOps > 0, `the children made progress (${lastOps} writes)`);
  });

  t.test(
    "addCluster checks and writes in one step: of racing adds of one name exactly one wins",
    async (t) => {
      const { mkdtemp } = await import("node:fs/promises");
      const { tmpdir } = await import("node:os");
      const { join } = await import("node:path");
      const dir = await mkdtemp(join(tmpdir(), "tether-addcluster-"));
      const stores = await Promise.all(Array.from({ length: 5 }, () => FileStore.open(dir)));
      const record = (n: number) => ({
        name: "same",
        auth: "impersonate" as const,
        labels: { n: String(n) },
        allowedUsers: [],
        allowedGroups: [],
        createdAt: new Date().toISOString(),
      });
      const results = await Promise.all(stores.map((s, i) => s.addCluster(record(i))));
      t.equal(results.filter(Boolean).length, 1);
      const winner = results.indexOf(true);
      t.same(
        (await stores[0]!.getCluster("same"))?.labels,
        { n: String(winner) },
        "the winner's record is kept",
      );
    },
  );
}
