// FileStore: the Store in a state directory (mode 0700):
//   ca.crt 0644, ca.key 0600          the CA (key written first, see loadOrCreateCa)
//   server.crt 0644, server.key 0600  tether-server's serving certificate
//   clusters.json, tokens.json, certs.json (0600)  one JSON document per concern
//   server.json 0644                  the URL `serve` listens at, for the admin commands
//   admin-credential.json 0600        the admin API credential `serve` creates on first start
//   state.lock                        held around every read-modify-write (file-lock.ts)
//
// Crash safety: every file is replaced atomically (writeFileAtomic), so a
// kill -9 at any moment leaves each file either before or after a write.
// Inside the lock the document is always re-read from disk. Reads take no
// lock: they see the last complete write. Leftover temporary files of dead
// writers are removed on open.
import { createPrivateKey, randomBytes, X509Certificate } from "node:crypto";
import { type BigIntStats, statSync } from "node:fs";
import { chmod, mkdir, open, readFile, stat, unlink, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import {
  codedError,
  ERR_TETHER_STATE_CORRUPT,
  parseJsonText,
  removeStaleTempFiles,
  writeFileAtomic,
} from "@tether/common";
import { newIncarnation } from "../pki/incarnation.js";
import {
  CertificateAuthority,
  canonicalIp,
  certificateNames,
  isIncarnation,
  isValidClusterName,
  type KeyPairPem,
  validateClusterName,
} from "../pki/pki.js";
import { isTokenHash } from "../pki/tokens.js";
import { withStateLock } from "./file-lock.js";
import {
  checkIsoDate,
  deepFreeze,
  type Frozen,
  invalid,
  isPlainObject,
  normalizeCluster,
  normalizeSerial,
  serialKey,
  normalizeToken,
} from "./records.js";
import {
  ADMIN_CREDENTIAL_FILE,
  type ClusterInput,
  type ClusterRecord,
  ERR_TETHER_STATE_DIR,
  ERR_TETHER_STATE_VERSION,
  EXPIRED_TOKENS_KEPT_MS,
  SERVER_INFO_FILE,
  type SessionRecords,
  type Store,
  type TokenRecord,
} from "./state-store.js";

/** `$TETHER_STATE_DIR`, else `./.tether`, as an absolute path. */
export function defaultStateDir(): string {
  const env = process.env.TETHER_STATE_DIR;
  return resolve(env && env.length > 0 ? env : ".tether");
}

const VERSION = 1;

interface ClustersDoc {
  version: 1;
  clusters: Record<string, ClusterRecord>;
}
interface TokensDoc {
  version: 1;
  tokens: Record<string, TokenRecord>;
}
interface IssuedCert {
  cluster: string;
  notAfter: string;
}
interface RevokedCert extends IssuedCert {
  revokedAt: string;
}
interface CertsDoc {
  version: 1;
  issued: Record<string, IssuedCert>;
  revoked: Record<string, RevokedCert>;
}

interface DocSpec<D> {
  file: string;
  empty(): D;
  maps: (keyof D & string)[];
}

const CLUSTERS: DocSpec<ClustersDoc> = {
  file: "clusters.json",
  empty: () => ({ version: VERSION, clusters: {} }),
  maps: ["clusters"],
};
const TOKENS: DocSpec<TokensDoc> = {
  file: "tokens.json",
  empty: () => ({ version: VERSION, tokens: {} }),
  maps: ["tokens"],
};
const CERTS: DocSpec<CertsDoc> = {
  file: "certs.json",
  empty: () => ({ version: VERSION, issued: {}, revoked: {} }),
  maps: ["issued", "revoked"],
};

function checkDoc<D>(spec: DocSpec<D>, path: string, value: unknown): D {
  if (!isPlainObject(value)) {
    throw codedError(ERR_TETHER_STATE_CORRUPT, `state file ${path} does not hold a JSON object`);
  }
  if (typeof value.version === "number" && value.version > VERSION) {
    throw codedError(
      ERR_TETHER_STATE_VERSION,
      `state file ${path} has version ${value.version}, written by a newer Tether; this one understands ${VERSION}`,
    );
  }
  if (value.version !== VERSION || !spec.maps.every((m) => isPlainObject(value[m]))) {
    throw codedError(
      ERR_TETHER_STATE_CORRUPT,
      `state file ${path} is not a Tether ${spec.file} document; restore it from a backup or move it away`,
    );
  }
  return value as D;
}

const has = (o: object, k: string) => Object.hasOwn(o, k);
const expired = (iso: string | undefined, now: number) => iso === undefined || !(Date.parse(iso) > now);

/** inode, size, mtime and ctime in ns: every write is a rename to a new file, so any write changes it. */
function fileKey(st: BigIntStats): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}

interface CachedDoc {
  /** inode, size, mtime and ctime in ns: every write is a rename to a new file. */
  key: string;
  doc: unknown;
}

export interface FileStoreOptions {
  /** Give up waiting for another process's lock after this long (default 15 s). */
  lockTimeoutMs?: number;
}

export class FileStore implements Store {
  readonly dir: string;
  readonly #lockTimeoutMs: number;
  readonly #cache = new Map<string, CachedDoc>();

  private constructor(dir: string, options: FileStoreOptions) {
    this.dir = dir;
    this.#lockTimeoutMs = options.lockTimeoutMs ?? 15_000;
  }

  /**
   * Opens (creating it, mode 0700) the state directory. Throws
   * `ERR_TETHER_STATE_DIR` with what to do when it can't be created or written.
   */
  static async open(dir: string, options: FileStoreOptions = {}): Promise<FileStore> {
    const abs = resolve(dir);
    const fail = (err: unknown) => {
      const e = err as NodeJS.ErrnoException;
      const uid = typeof process.getuid === "function" ? ` (uid ${process.getuid()})` : "";
      return codedError(
        ERR_TETHER_STATE_DIR,
        `state directory ${abs} is not usable: ${e.code ?? "error"}: ${e.message}. ` +
          `Create it as a directory writable by this user${uid}, or point --state-dir (or TETHER_STATE_DIR) ` +
          `at one; in Kubernetes, mount a volume there (and set the pod's fsGroup)`,
        err,
      );
    };
    try {
      await mkdir(abs, { recursive: true, mode: 0o700 });
      const st = await stat(abs);
      if (!st.isDirectory()) throw Object.assign(new Error("not a directory"), { code: "ENOTDIR" });
      if ((st.mode & 0o077) !== 0) await chmod(abs, 0o700).catch(() => {}); // keep other users out
      // Prove we can create files there (read-only mounts, full disks, wrong owner).
      const probe = join(abs, `.probe.${process.pid}.${randomBytes(8).toString("hex")}.tmp`);
      await writeFile(probe, "", { flag: "wx", mode: 0o600 });
      await unlink(probe);
      await removeStaleTempFiles(abs);
    } catch (err) {
      throw fail(err);
    }
    const store = new FileStore(abs, options);
    await store.#assignIncarnations();
    return store;
  }

  /** Gives clusters registered before incarnations existed one (see incarnation.ts for their certificates). */
  async #assignIncarnations(): Promise<void> {
    let doc: ClustersDoc;
    try {
      doc = await this.#read(CLUSTERS);
    } catch {
      return; // a damaged document is reported by the reads that need it, with what to do
    }
    if (Object.values(doc.clusters).every((c) => isIncarnation(c.uid))) return;
    await this.#mutate(CLUSTERS, (fresh) => {
      let changed = false;
      for (const c of Object.values(fresh.clusters)) {
        if (isIncarnation(c.uid)) continue;
        c.uid = newIncarnation();
        changed = true;
      }
      return [undefined, changed];
    });
  }

  // --- CA and serving certificate ---------------------------------------------------------

  async loadOrCreateCa(): Promise<CertificateAuthority> {
    return this.#locked(async () => {
      const existing = await this.#loadCa();
      if (existing) return existing;
      return this.#createCaUnlocked();
    });
  }

  async #loadCa(): Promise<CertificateAuthority | undefined> {
    const certPem = await this.#readText("ca.crt");
    if (certPem === undefined) return undefined;
    const keyPem = await this.#readText("ca.key");
    if (keyPem === undefined) {
      throw codedError(
        ERR_TETHER_STATE_CORRUPT,
        `${this.#path("ca.crt")} exists but ${this.#path("ca.key")} does not; restore the CA key from a backup ` +
          `(or remove ca.crt to create a new CA, which invalidates every certificate issued so far)`,
      );
    }
    await chmod(this.#path("ca.key"), 0o600).catch(() => {});
    return CertificateAuthority.load(certPem, keyPem);
  }

  async loadOrCreateServingCertificate(names: {
    dnsNames: string[];
    ips: string[];
  }): Promise<KeyPairPem & { keyPem: string }> {
    return this.#locked(async () => {
      const ca = (await this.#loadCa()) ?? (await this.#createCaUnlocked());
      const certPem = await this.#readText("server.crt");
      const keyPem = await this.#readText("server.key");
      if (certPem !== undefined && keyPem !== undefined && servingCertUsable(ca, certPem, keyPem, names)) {
        return { certPem, keyPem };
      }
      const issued = await ca.issueServerCertificate(names);
      const newKey = issued.keyPem!;
      await writeFileAtomic(this.#path("server.key"), newKey, 0o600);
      await writeFileAtomic(this.#path("server.crt"), issued.certPem, 0o644);
      return { certPem: issued.certPem, keyPem: newKey };
    });
  }

  async #createCaUnlocked(): Promise<CertificateAuthority> {
    const ca = await CertificateAuthority.create();
    // Key first: a crash in between leaves a key without a certificate, which
    // #loadCa treats as "no CA yet" (nothing can have been issued by it).
    await writeFileAtomic(this.#path("ca.key"), ca.keyPem(), 0o600);
    await writeFileAtomic(this.#path("ca.crt"), ca.certPem, 0o644);
    return ca;
  }

  // --- clusters -------------------------------------------------------------------------------

  async listClusters(): Promise<ClusterRecord[]> {
    const doc = await this.#read(CLUSTERS);
    return Object.values(doc.clusters)
      .map((c) => structuredClone(c))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async getCluster(name: string): Promise<Frozen<ClusterRecord> | undefined> {
    const doc = await this.#read(CLUSTERS);
    // The cached document is frozen (#read): handed out as it is, not cloned per request.
    return has(doc.clusters, name) ? (doc.clusters[name] as Frozen<ClusterRecord>) : undefined;
  }

  async putCluster(record: Frozen<ClusterInput>): Promise<void> {
    const r = normalizeCluster(record as ClusterInput);
    await this.#mutate(CLUSTERS, (doc) => {
      const uid = has(doc.clusters, r.name) ? doc.clusters[r.name]!.uid : undefined;
      doc.clusters[r.name] = { ...r, uid: isIncarnation(uid) ? uid : newIncarnation() };
      return [undefined, true];
    });
  }

  /**
   * putCluster for many records in one write: registering a fleet one
   * cluster at a time rewrites the whole clusters document each time.
   */
  async putClusters(records: Frozen<ClusterInput>[]): Promise<void> {
    const rs = records.map((r) => normalizeCluster(r as ClusterInput));
    await this.#mutate(CLUSTERS, (doc) => {
      for (const r of rs) {
        const uid = has(doc.clusters, r.name) ? doc.clusters[r.name]!.uid : undefined;
        doc.clusters[r.name] = { ...r, uid: isIncarnation(uid) ? uid : newIncarnation() };
      }
      return [undefined, rs.length > 0];
    });
  }

  async addCluster(record: Frozen<ClusterInput>): Promise<boolean> {
    const r = normalizeCluster(record as ClusterInput);
    return this.#mutate(CLUSTERS, (doc) => {
      if (has(doc.clusters, r.name)) return [false, false];
      doc.clusters[r.name] = { ...r, uid: newIncarnation() };
      return [true, true];
    });
  }

  async deleteCluster(name: string): Promise<boolean> {
    return this.#mutate(CLUSTERS, (doc) => {
      if (!has(doc.clusters, name)) return [false, false];
      delete doc.clusters[name];
      return [true, true];
    });
  }

  // --- tokens ---------------------------------------------------------------------------------

  async addToken(record: TokenRecord): Promise<void> {
    const r = normalizeToken(record);
    await this.#mutate(TOKENS, (doc) => {
      if (has(doc.tokens, r.hash)) throw invalid("a token with this hash already exists");
      doc.tokens[r.hash] = r;
      return [undefined, true];
    });
  }

  async findToken(
    hash: string,
    options: { includeExpired?: boolean } = {},
  ): Promise<Frozen<TokenRecord> | undefined> {
    const doc = await this.#read(TOKENS);
    if (!has(doc.tokens, hash)) return undefined;
    const r = doc.tokens[hash] as Frozen<TokenRecord>;
    const now = options.includeExpired ? Date.now() - EXPIRED_TOKENS_KEPT_MS : Date.now();
    return expired(r.expiresAt, now) ? undefined : r;
  }

  async consumeJoinToken(hash: string, cluster: string): Promise<TokenRecord | undefined> {
    if (!isTokenHash(hash) || !isValidClusterName(cluster)) return undefined;
    return this.#mutate(TOKENS, (doc) => {
      if (!has(doc.tokens, hash)) return [undefined, false];
      const r = doc.tokens[hash]!;
      if (
        r.kind !== "join" ||
        r.cluster !== cluster ||
        r.usedAt !== undefined ||
        expired(r.expiresAt, Date.now())
      ) {
        return [undefined, false];
      }
      r.usedAt = new Date().toISOString();
      return [structuredClone(r), true];
    });
  }

  /** Every unexpired token record (hashes only: tokens themselves are never stored). */
  async listTokens(): Promise<TokenRecord[]> {
    const doc = await this.#read(TOKENS);
    const now = Date.now();
    return Object.values(doc.tokens)
      .filter((r) => !expired(r.expiresAt, now))
      .map((r) => structuredClone(r));
  }

  /** Deletes a token by hash; returns whether it existed. */
  async deleteToken(hash: string): Promise<boolean> {
    return this.#mutate(TOKENS, (doc) => {
      if (!has(doc.tokens, hash)) return [false, false];
      delete doc.tokens[hash];
      return [true, true];
    });
  }

  // --- certificate serials --------------------------------------------------------------------

  async recordIssued(serial: string, cluster: string, notAfter: string): Promise<void> {
    const s = normalizeSerial(serial);
    validateClusterName(cluster);
    checkIsoDate("notAfter", notAfter);
    await this.#mutate(CERTS, (doc) => {
      doc.issued[s] = { cluster, notAfter };
      return [undefined, true];
    });
  }

  async revokeCluster(cluster: string): Promise<void> {
    await this.#mutate(CERTS, (doc) => {
      const revokedAt = new Date().toISOString();
      let changed = false;
      for (const [serial, rec] of Object.entries(doc.issued)) {
        if (rec.cluster !== cluster) continue;
        doc.revoked[serial] = { ...rec, revokedAt };
        delete doc.issued[serial];
        changed = true;
      }
      return [undefined, changed];
    });
  }

  async changeMark(): Promise<string> {
    const keys = await Promise.all(
      [CLUSTERS, CERTS].map(async (spec) => {
        try {
          return fileKey(await stat(this.#path(spec.file), { bigint: true }));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === "ENOENT") return "none";
          throw err;
        }
      }),
    );
    return keys.join("|");
  }

  async isRevoked(serial: string): Promise<boolean> {
    const s = serialKey(serial);
    if (s === undefined) return false;
    const doc = await this.#read(CERTS);
    return has(doc.revoked, s);
  }

  async sessionRecords(): Promise<SessionRecords> {
    // The cached documents themselves, unchanged by later writes (each write parses a fresh copy): no clones.
    const [clusters, certs] = await Promise.all([this.#read(CLUSTERS), this.#read(CERTS)]);
    return {
      cluster: (name) => (has(clusters.clusters, name) ? clusters.clusters[name] : undefined),
      isRevoked: (serial) => {
        const s = serialKey(serial);
        return s !== undefined && has(certs.revoked, s);
      },
    };
  }

  // --- server URL ---------------------------------------------------------------------------

  async serverUrl(): Promise<string | undefined> {
    const text = await this.#readText(SERVER_INFO_FILE);
    if (text === undefined) return undefined;
    const info = parseJsonText<unknown>(this.#path(SERVER_INFO_FILE), text);
    const url = (info as { url?: unknown } | null)?.url;
    if (typeof url !== "string") {
      throw codedError(
        ERR_TETHER_STATE_CORRUPT,
        `${this.#path(SERVER_INFO_FILE)} has no "url"; delete it and restart serve`,
      );
    }
    return url;
  }

  async recordServerUrl(url: string): Promise<void> {
    await writeFileAtomic(this.#path(SERVER_INFO_FILE), JSON.stringify({ url }, null, 2) + "\n", 0o644);
  }

  describe(): string {
    return this.dir;
  }

  async adminCredential(): Promise<string | undefined> {
    return this.#readText(ADMIN_CREDENTIAL_FILE);
  }

  async saveAdminCredential(text: string, replace?: string): Promise<string> {
    return this.#locked(async () => {
      const existing = await this.#readText(ADMIN_CREDENTIAL_FILE);
      if (existing !== undefined && existing !== replace) return existing;
      await writeFileAtomic(this.#path(ADMIN_CREDENTIAL_FILE), text, 0o600);
      return text;
    });
  }

  // --- plumbing -------------------------------------------------------------------------------

  #path(name: string): string {
    return join(this.dir, name);
  }

  async #readText(name: string): Promise<string | undefined> {
    try {
      return await readFile(this.#path(name), "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  }

  /**
   * Reads a document. Without `fresh`, a parsed copy is reused while the file
   * is unchanged (same inode, size, mtime and ctime), frozen so that no caller
   * can change it (getCluster and findToken hand its records out as they are);
   * a `fresh` read is the caller's own to change.
   */
  async #read<D>(spec: DocSpec<D>, fresh = false): Promise<D> {
    const path = this.#path(spec.file);
    const cached = this.#cache.get(spec.file);
    // Every request reads the clusters and tokens: an unchanged file is told by one stat, done
    // at once. open, fstat and close were three trips to the thread pool, and on a loaded
    // machine each one waited for the CPU: 2.3 ms of a 12 ms GET in a hop trace at load 24.
    if (!fresh && cached !== undefined) {
      const st = statSync(path, { bigint: true, throwIfNoEntry: false });
      if (st !== undefined && fileKey(st) === cached.key) return cached.doc as D;
    }
    let fh: Awaited<ReturnType<typeof open>>;
    try {
      fh = await open(path, "r");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        this.#cache.delete(spec.file);
        return spec.empty();
      }
      throw err;
    }
    try {
      const key = fileKey(await fh.stat({ bigint: true }));
      if (!fresh && cached?.key === key) return cached.doc as D;
      const doc = checkDoc(spec, path, parseJsonText<unknown>(path, await fh.readFile("utf8")));
      if (!fresh) this.#cache.set(spec.file, { key, doc: deepFreeze(doc) as D });
      return doc;
    } finally {
      await fh.close();
    }
  }

  /** Read-modify-write of one document under the process queue and the directory lock. */
  async #mutate<D, R>(spec: DocSpec<D>, fn: (doc: D) => [R, boolean]): Promise<R> {
    return this.#locked(async () => {
      const doc = await this.#read(spec, true);
      const [result, changed] = fn(doc);
      const pruned = prune(doc, Date.now());
      if (changed || pruned) {
        await writeFileAtomic(this.#path(spec.file), JSON.stringify(doc, null, 2) + "\n", 0o600);
      }
      return result;
    });
  }

  #locked<T>(fn: () => Promise<T>): Promise<T> {
    return withStateLock(this.dir, this.#lockTimeoutMs, fn);
  }
}

/**
 * Drops tokens that expired over EXPIRED_TOKENS_KEPT_MS ago and certificates
 * that have expired anyway. Returns whether anything was dropped.
 */
function prune(doc: unknown, now: number): boolean {
  let pruned = false;
  const d = doc as Partial<TokensDoc & CertsDoc>;
  if (d.tokens) {
    for (const [k, v] of Object.entries(d.tokens)) {
      if (expired(v.expiresAt, now - EXPIRED_TOKENS_KEPT_MS)) {
        delete d.tokens[k];
        pruned = true;
      }
    }
  }
  for (const map of [d.issued, d.revoked] as (
    | Record<string, { expiresAt?: string; notAfter?: string }>
    | undefined
  )[]) {
    if (!map) continue;
    for (const [k, v] of Object.entries(map)) {
      if (expired(v.expiresAt ?? v.notAfter, now)) {
        delete map[k];
        pruned = true;
      }
    }
  }
  return pruned;
}

/** Whether the stored serving certificate can be kept for `names`. */
export function servingCertUsable(
  ca: CertificateAuthority,
  certPem: string,
  keyPem: string,
  names: { dnsNames: string[]; ips: string[] },
): boolean {
  try {
    const cert = new X509Certificate(certPem);
    const caCert = new X509Certificate(ca.certPem);
    if (!cert.checkIssued(caCert) || !cert.verify(caCert.publicKey)) return false;
    if (!cert.checkPrivateKey(createPrivateKey(keyPem))) return false;
    const from = Date.parse(cert.validFrom);
    const to = Date.parse(cert.validTo);
    if (!(to - Date.now() > (to - from) / 3)) return false;
    const have = certificateNames(certPem);
    const want = {
      dnsNames: names.dnsNames.map((n) => n.toLowerCase()),
      ips: names.ips.map(canonicalIp),
    };
    return sameSet(have.dnsNames, want.dnsNames) && sameSet(have.ips, want.ips);
  } catch {
    return false;
  }
}

function sameSet(a: string[], b: string[]): boolean {
  const sa = new Set(a);
  const sb = new Set(b);
  return sa.size === sb.size && [...sa].every((x) => sb.has(x));
}
