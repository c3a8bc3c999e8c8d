// The admin credential's life: written 0600 once, kept across restarts,
// renewed when a third of its year is left (by a running server too) without
// cutting off the copies admins hold, and rotated on purpose, which revokes
// every earlier copy at once — checked against a real TetherServer.
import { copyFile, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t, { type Test } from "tap";
import {
  ADMIN_TOKEN_TTL_MS,
  ensureAdminCredential,
  maintainAdminCredential,
  parseAdminCredential,
} from "../../src/admin/admin-credential.js";
import { runCliCaptured } from "../../src/cli/cli.js";
import { createLogger } from "../../src/logger.js";
import { CertificateAuthority } from "../../src/pki/pki.js";
import { hashToken } from "../../src/pki/tokens.js";
import { TetherServer } from "../../src/server.js";
import { FileStore } from "../../src/store/file-store.js";
import { ADMIN_CREDENTIAL_FILE } from "../../src/store/state-store.js";

const cli = (...args: string[]) => runCliCaptured(args);
const silent = createLogger({ level: "silent" });
const SERVER = "https://tether.example.com:8443";
const DAY_MS = 86_400_000;

async function tempStore(t: Test) {
  const dir = await mkdtemp(join(tmpdir(), "tether-admin-credential-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return FileStore.open(join(dir, "state"));
}

/** Makes the token's record expire in `ms`, as if it had been issued long ago. */
async function age(store: FileStore, token: string, ms: number) {
  const hash = hashToken(token);
  await store.deleteToken(hash);
  await store.addToken({ hash, kind: "admin", expiresAt: new Date(Date.now() + ms).toISOString() });
}

async function until(what: string, cond: () => Promise<boolean>) {
  for (let i = 0; i < 300; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`${what}: not within 300 tries`);
}

t.test("written 0600 once, kept, renewed without cutting off copies", async (t) => {
  const store = await tempStore(t);
  const ca = await CertificateAuthority.create();
  const file = join(store.dir, ADMIN_CREDENTIAL_FILE);

  const credential = await ensureAdminCredential(store, SERVER, ca.certPem);
  t.equal((await stat(file)).mode & 0o777, 0o600, "written 0600");
  const text = await readFile(file, "utf8");
  t.same(parseAdminCredential(text, file), credential);
  t.equal(credential.server, SERVER);
  t.equal(credential.caCertificate, ca.certPem);
  t.equal((await store.findToken(hashToken(credential.token)))?.kind, "admin", "its token is an admin token");
  t.notOk(
    JSON.stringify(await store.listTokens()).includes(credential.token),
    "the store keeps only its hash",
  );

  await ensureAdminCredential(store, SERVER, ca.certPem);
  t.equal(await readFile(file, "utf8"), text, "a restart leaves the file as it was");

  const moved = await ensureAdminCredential(store, "https://other.example.com", ca.certPem);
  t.equal(moved.token, credential.token, "a new URL rewrites the document with the same token");
  t.equal(moved.server, "https://other.example.com");

  await age(store, credential.token, ADMIN_TOKEN_TTL_MS / 3 + DAY_MS);
  t.equal(
    (await ensureAdminCredential(store, SERVER, ca.certPem)).token,
    credential.token,
    "kept while more than a third of its year is left",
  );
  await age(store, credential.token, ADMIN_TOKEN_TTL_MS / 3 - DAY_MS);
  const renewed = await ensureAdminCredential(store, SERVER, ca.certPem);
  t.not(renewed.token, credential.token, "renewed when less than a third is left");
  t.ok(Date.parse(renewed.expiresAt) > Date.now() + ADMIN_TOKEN_TTL_MS - DAY_MS, "for a new year");
  t.equal(
    (await store.findToken(hashToken(credential.token)))?.kind,
    "admin",
    "the token it replaced stays valid until its own expiry",
  );

  await store.deleteToken(hashToken(renewed.token));
  const reissued = await ensureAdminCredential(store, SERVER, ca.certPem);
  t.not(reissued.token, renewed.token, "a credential whose token is gone gets a new token");
  t.equal((await store.findToken(hashToken(reissued.token)))?.kind, "admin");
});

t.test("a running server renews the credential itself", async (t) => {
  const store = await tempStore(t);
  const ca = await CertificateAuthority.create();
  const stop = await maintainAdminCredential(store, SERVER, ca.certPem, silent, 10);
  const first = parseAdminCredential((await store.adminCredential()) ?? "", "stored");
  t.equal((await store.findToken(hashToken(first.token)))?.kind, "admin", "written at start");
  await age(store, first.token, DAY_MS);
  await until("renewed", async () => (await store.adminCredential())?.includes(first.token) === false);
  const second = parseAdminCredential((await store.adminCredential()) ?? "", "stored");
  await stop();
  t.equal((await store.findToken(hashToken(second.token)))?.kind, "admin", "renewed without a restart");
});

t.test("rotate-admin-credential revokes every earlier copy", async (t) => {
  const store = await tempStore(t);
  const server = await TetherServer.start({ store, host: "127.0.0.1", port: 0, log: silent });
  t.teardown(() => server.close());
  const file = join(store.dir, ADMIN_CREDENTIAL_FILE);
  const first = await ensureAdminCredential(store, server.url, server.ca.certPem);
  // An admin's copy of a credential since renewed: still valid until rotation.
  const copy = join(store.dir, "..", "copy.json");
  await copyFile(file, copy);
  await age(store, first.token, DAY_MS);
  const renewed = await ensureAdminCredential(store, server.url, server.ca.certPem);
  t.equal((await cli("cluster", "list", "--credential", copy)).code, 0, "the old copy works before rotation");

  const r = await cli("rotate-admin-credential", "--state-dir", store.dir);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, new RegExp(`every earlier copy is revoked.*\\n.*is in ${file}`));
  t.notMatch(r.stdout, /tether_/, "the token is not printed");
  t.equal((await stat(file)).mode & 0o777, 0o600, "still 0600");
  const rotated = parseAdminCredential(await readFile(file, "utf8"), file);
  t.not(rotated.token, renewed.token);
  t.equal(rotated.server, server.url, "same server");
  t.equal(rotated.caCertificate, server.ca.certPem, "same CA");

  // The copy made before renewal, and the credential as it was just before rotating.
  const before = join(store.dir, "..", "before.json");
  await writeFile(before, JSON.stringify({ ...rotated, token: renewed.token }), { mode: 0o600 });
  for (const [what, path] of [
    ["the renewed-over copy", copy],
    ["the credential as it was", before],
  ] as const) {
    const refused = await cli("cluster", "list", "--credential", path);
    t.equal(refused.code, 1, `${what} is refused`);
    t.match(refused.stderr, /unknown or expired token/, what);
  }
  const ok = await cli("cluster", "list", "-o", "json", "--credential", file);
  t.equal(ok.code, 0, ok.stderr);
  t.same(
    (await store.listTokens()).filter((r) => r.kind === "admin").map((r) => r.hash),
    [hashToken(rotated.token)],
    "one admin token is left",
  );
  t.equal(
    (await ensureAdminCredential(store, server.url, server.ca.certPem)).token,
    rotated.token,
    "serve's next check keeps the rotated credential",
  );

  const empty = await tempStore(t);
  const none = await cli("rotate-admin-credential", "--state-dir", empty.dir);
  t.equal(none.code, 1);
  t.match(none.stderr, /no usable admin credential in .*start "tether-server serve" on it once/);
});
