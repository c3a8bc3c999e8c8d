// What every Tether server keeps — the CA, the serving certificate, registered
// clusters, token hashes, issued and revoked certificate serials, the admin
// credential — and the `Store` interface the server codes against. Two stores
// implement it: FileStore (file-store.ts, a state directory) and KubeStore
// (kube-store.ts, the host cluster); store-contract tests run the same
// expectations against both.
import { type AuthMode, ERR_TETHER_STATE_CORRUPT } from "@tether/common";
import type { CertificateAuthority, KeyPairPem } from "../pki/pki.js";
import type { Frozen } from "./records.js";

export type { AuthMode };

export interface ClusterRecord {
  name: string;
  auth: AuthMode;
  labels: Record<string, string>;
  allowedUsers: string[];
  allowedGroups: string[];
  createdAt: string;
  /**
   * The registration's incarnation (incarnation.ts), assigned by the store
   * when the cluster is added: a name removed and added again gets a new one.
   */
  uid: string;
  /**
   * Who may use each in-cluster service the agent exposes (tether-agent
   * --expose NAME=URL), by NAME. A service not listed here is usable by nobody.
   */
  services?: Record<string, ServiceAccess>;
}

/** The users and groups allowed one exposed service; empty lists allow nobody. */
export interface ServiceAccess {
  allowedUsers: string[];
  allowedGroups: string[];
}

/** A cluster as callers hand it to a store, which assigns (or keeps) its uid and ignores any given one. */
export type ClusterInput = Omit<ClusterRecord, "uid"> & { uid?: string };

export interface TokenRecord {
  hash: string;
  /** join: an agent's one-time join; user: a host caller; admin: the admin API. */
  kind: "user" | "join" | "admin";
  user?: string;
  groups?: string[];
  /** Join tokens and cluster-scoped user tokens. */
  cluster?: string;
  /** User tokens: which clusters, ["*"] for all. */
  clusters?: string[];
  expiresAt: string;
  usedAt?: string;
}

export interface Store {
  readonly dir?: string;
  /** ca.crt 0644 + ca.key 0600; created on first use. */
  loadOrCreateCa(): Promise<CertificateAuthority>;
  /** Reissued when missing, not from the current CA, the names change or less than 1/3 of its lifetime is left. */
  loadOrCreateServingCertificate(names: {
    dnsNames: string[];
    ips: string[];
  }): Promise<KeyPairPem & { keyPem: string }>;
  listClusters(): Promise<ClusterRecord[]>;
  /** The store's own copy, frozen (records.ts Frozen): read it, never change it. */
  getCluster(name: string): Promise<Frozen<ClusterRecord> | undefined>;
  /** Creates or updates; an update keeps the cluster's uid. */
  putCluster(record: Frozen<ClusterInput>): Promise<void>;
  /** Registers a new cluster with a new uid; false (and nothing written) when the name is taken. Check and write are one step. */
  addCluster(record: Frozen<ClusterInput>): Promise<boolean>;
  deleteCluster(name: string): Promise<boolean>;
  addToken(record: TokenRecord): Promise<void>;
  /**
   * Expired tokens are not returned, unless `includeExpired` (then one that
   * expired up to EXPIRED_TOKENS_KEPT_MS ago is, so a 401 can say it expired).
   * Like getCluster's, the record is the store's own, frozen.
   */
  findToken(hash: string, options?: { includeExpired?: boolean }): Promise<Frozen<TokenRecord> | undefined>;
  /** Atomically marks a join token used; a used, expired, unknown or wrong-cluster token returns undefined. */
  consumeJoinToken(hash: string, cluster: string): Promise<TokenRecord | undefined>;
  recordIssued(serial: string, cluster: string, notAfter: string): Promise<void>;
  /** Revokes every recorded serial of the cluster. */
  revokeCluster(cluster: string): Promise<void>;
  isRevoked(serial: string): Promise<boolean>;
  /**
   * A value that changes whenever a cluster is added, removed or registered
   * again, or a certificate is revoked: the server's once-a-second session
   * check compares it instead of reading every session's records.
   */
  changeMark(): Promise<string>;
  /**
   * Every registered cluster and revoked serial in one read, for the session
   * check that follows a moved changeMark(): one read for the whole fleet, not
   * two per session. The view is what the store held when it was read.
   */
  sessionRecords(): Promise<SessionRecords>;
  /** Every unexpired token record. */
  listTokens(): Promise<TokenRecord[]>;
  /** Deletes a token by hash; returns whether it existed. */
  deleteToken(hash: string): Promise<boolean>;
  /** The URL agents and callers reach tether-server at, as `serve` recorded it. */
  serverUrl(): Promise<string | undefined>;
  recordServerUrl(url: string): Promise<void>;
  /**
   * The admin credential `serve` creates on first start (a document holding a
   * plaintext admin token: FileStore keeps it in admin-credential.json 0600),
   * undefined before that.
   */
  adminCredential(): Promise<string | undefined>;
  /**
   * Stores `text` as the admin credential unless one exists already (then
   * returns that one); `replace` swaps it only when the stored text is still
   * `replace`, so two servers rotating at once keep one winner.
   */
  saveAdminCredential(text: string, replace?: string): Promise<string>;
  /** Where the state lives, for messages: a directory, or a namespace of a cluster. */
  describe(): string;
}

/** A read-only view of what decides whether a live agent session may stay (Store.sessionRecords). */
export interface SessionRecords {
  /** The cluster's registration, undefined when it is not registered. */
  cluster(name: string): Pick<ClusterRecord, "name" | "uid" | "createdAt"> | undefined;
  /** Whether the serial (any case, as isRevoked takes it) has been revoked. */
  isRevoked(serial: string): boolean;
}

/** How long a store keeps a token's record after it expired (see findToken's includeExpired). */
export const EXPIRED_TOKENS_KEPT_MS = 24 * 3600_000;

/** The file in the state directory where `serve` records the URL agents and callers use. */
export const SERVER_INFO_FILE = "server.json";
/** The file in the state directory holding the admin credential `serve` creates on first start. */
export const ADMIN_CREDENTIAL_FILE = "admin-credential.json";

export const ERR_TETHER_STATE_DIR = "ERR_TETHER_STATE_DIR";
export const ERR_TETHER_STATE_LOCKED = "ERR_TETHER_STATE_LOCKED";
export const ERR_TETHER_STATE_VERSION = "ERR_TETHER_STATE_VERSION";
export const ERR_TETHER_INVALID_RECORD = "ERR_TETHER_INVALID_RECORD";
export { ERR_TETHER_STATE_CORRUPT };
