// What the admin commands do, without the printing: register, list and remove
// clusters, issue join tokens and user tokens. `ClusterAdmin` is the seam the
// CLI codes against; `StoreClusterAdmin` does the work on a Store (the CLI on
// a state directory, the server behind its admin API), and a remote client can
// implement the same interface over HTTP.
//
// Every input is validated here, not only by the CLI's parsers, because the
// admin API receives it from the network.

import type { ClusterConnection } from "../observe/status-model.js";
import { validateClusterName } from "../pki/pki.js";
import { issueToken } from "../pki/tokens.js";
import type { AuthMode, ClusterInput, ClusterRecord, Store, TokenRecord } from "../store/state-store.js";
import {
  checkIdentity,
  checkServiceName,
  checkTtlMs,
  ERR_TETHER_CLUSTER_EXISTS,
  ERR_TETHER_NO_SERVER_URL,
  ERR_TETHER_UNKNOWN_CLUSTER,
  fail,
  MAX_JOIN_TOKEN_TTL_MS,
  MAX_USER_TOKEN_TTL_MS,
  normalizeServerUrl,
  parseAuthMode,
  parseLabels,
  uniqueAllowed,
  uniqueIdentities,
} from "./admin-input.js";
import { listUserTokens, revokeUserTokens, type TokenInfo, type TokenSelector } from "./token-admin.js";

/** What an operator chooses for a new cluster. */
export interface ClusterSpec {
  name: string;
  auth?: AuthMode;
  labels?: Record<string, string>;
  allowedUsers?: string[];
  allowedGroups?: string[];
}

export interface JoinInfo {
  name: string;
  server: string;
  token: string;
  caHash: string;
  expiresAt: string;
  agentCommand: string;
  auth: AuthMode;
  labels: Record<string, string>;
  allowedUsers: string[];
  allowedGroups: string[];
}

export interface RemoveResult {
  name: string;
  joinTokensDeleted: number;
  userTokensDeleted: number;
  userTokensNarrowed: number;
}

/** A user token scoped to one cluster, with what a kubeconfig needs besides it. */
export interface UserToken {
  cluster: string;
  user: string;
  groups: string[];
  token: string;
  expiresAt: string;
  server: string;
  caPem: string;
}

/** Who may use one exposed service of a cluster. */
export interface ServiceGrant {
  cluster: string;
  service: string;
  allowedUsers: string[];
  allowedGroups: string[];
}

/** Where a host caller reaches a cluster, and who the cluster lets in: what a credential-less client config needs. */
export interface MemberEndpoint {
  cluster: string;
  server: string;
  caPem: string;
  allowedUsers: string[];
  allowedGroups: string[];
}

/** A cluster as listed: through a running server, with its agent session there; from the store alone, without. */
export type ListedCluster = ClusterRecord & { connection?: ClusterConnection };

export interface ClusterAdmin {
  /** Where the clusters live, for messages ("/var/lib/tether", "https://tether:8443"). */
  readonly where: string;
  addCluster(spec: ClusterSpec, joinTokenTtlMs: number): Promise<JoinInfo>;
  listClusters(): Promise<ListedCluster[]>;
  removeCluster(name: string): Promise<RemoveResult>;
  newJoinToken(name: string, ttlMs: number): Promise<JoinInfo>;
  issueUserToken(name: string, user: string, groups: string[], ttlMs: number): Promise<UserToken>;
  /** Adds users and groups to those allowed an exposed service of the cluster. */
  allowService(name: string, service: string, users: string[], groups: string[]): Promise<ServiceGrant>;
  /** Drops the service's list: nobody may use it. Returns whether there was one. */
  removeService(
    name: string,
    service: string,
  ): Promise<{ cluster: string; service: string; removed: boolean }>;
  memberEndpoint(name: string): Promise<MemberEndpoint>;
  /** Unexpired user tokens (token-admin.ts), or those of `user`. */
  listTokens(user?: string): Promise<TokenInfo[]>;
  /** Deletes user tokens by id or user; returns those revoked. */
  revokeTokens(selector: TokenSelector): Promise<TokenInfo[]>;
}

/** Shell-quotes `s` unless it is made only of safe characters. */
function shellQuote(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The command that starts an agent. The join token goes in the agent's
 * environment, never its argv, which every user of the machine can read with ps.
 */
export function agentCommand(server: string, cluster: string, token: string, caHash: string): string {
  return (
    `TETHER_JOIN_TOKEN=${shellQuote(token)} ` +
    ["tether-agent", "--server", server, "--cluster", cluster, "--ca-hash", caHash].map(shellQuote).join(" ")
  );
}

/** `--server` if given, else the URL `serve` recorded in the store; ERR_TETHER_NO_SERVER_URL otherwise. */
export async function resolveServerUrl(store: Store, flag: string | undefined): Promise<string> {
  if (flag !== undefined) return normalizeServerUrl(flag, "--server");
  const recorded = await store.serverUrl();
  if (recorded === undefined) {
    return fail(
      ERR_TETHER_NO_SERVER_URL,
      `no server URL: pass --server https://<host>:<port> (the URL agents and callers reach tether-server at), ` +
        `or run "tether-server serve" with this state once so that it records its URL (in ${store.describe()})`,
    );
  }
  return normalizeServerUrl(recorded, store.describe());
}

export class StoreClusterAdmin implements ClusterAdmin {
  readonly where: string;

  /** `server` is resolved on first need, so that listing and removing work before `serve` ever ran. */
  constructor(
    readonly store: Store,
    private readonly server: () => Promise<string>,
  ) {
    this.where = store.describe();
  }

  async addCluster(spec: ClusterSpec, joinTokenTtlMs: number): Promise<JoinInfo> {
    validateClusterName(spec.name);
    const record: ClusterInput = {
      name: spec.name,
      auth: parseAuthMode(spec.auth ?? "impersonate"),
      labels: parseLabels(Object.entries(spec.labels ?? {}).map(([k, v]) => `${k}=${v}`)),
      allowedUsers: uniqueAllowed("user", spec.allowedUsers ?? []),
      allowedGroups: uniqueAllowed("group", spec.allowedGroups ?? []),
      createdAt: new Date().toISOString(),
    };
    checkTtlMs("--token-ttl", joinTokenTtlMs, MAX_JOIN_TOKEN_TTL_MS);
    const server = await this.server();
    if (!(await this.store.addCluster(record))) {
      fail(
        ERR_TETHER_CLUSTER_EXISTS,
        `cluster ${spec.name} already exists; for a new join token run "tether-server join-token ${spec.name}", ` +
          `or "tether-server cluster remove ${spec.name}" first to start over`,
      );
    }
    return this.#issueJoinToken(record, server, joinTokenTtlMs);
  }

  listClusters(): Promise<ClusterRecord[]> {
    return this.store.listClusters();
  }

  /**
   * Revokes the cluster's agent certificates, deletes its unused join tokens
   * and the user tokens scoped to it alone (so that a later cluster of the
   * same name doesn't inherit them; tokens scoped to several clusters lose
   * this one), then deletes the record. Through the admin API the server then
   * closes the cluster's sessions at once; otherwise a running server cuts the
   * agent off when its session check sees the record go (or come back as a
   * new registration).
   */
  async removeCluster(name: string): Promise<RemoveResult> {
    await this.#existing(name);
    const store = this.store;
    await store.revokeCluster(name);
    const result: RemoveResult = { name, joinTokensDeleted: 0, userTokensDeleted: 0, userTokensNarrowed: 0 };
    for (const t of await store.listTokens()) {
      if (t.kind === "join") {
        if (t.cluster === name && t.usedAt === undefined && (await store.deleteToken(t.hash))) {
          result.joinTokensDeleted++;
        }
        continue;
      }
      const scoped = t.clusters ?? [];
      if (t.cluster !== name && !scoped.includes(name)) continue;
      const rest = scoped.filter((c) => c !== name);
      if (!(await store.deleteToken(t.hash))) continue;
      if (t.cluster === name || rest.length === 0) {
        result.userTokensDeleted++;
      } else {
        const narrowed: TokenRecord = { ...t, clusters: rest };
        await store.addToken(narrowed);
        result.userTokensNarrowed++;
      }
    }
    await store.deleteCluster(name);
    return result;
  }

  async newJoinToken(name: string, ttlMs: number): Promise<JoinInfo> {
    validateClusterName(name);
    checkTtlMs("--token-ttl", ttlMs, MAX_JOIN_TOKEN_TTL_MS);
    const server = await this.server();
    const cluster = await this.#existing(name);
    return this.#issueJoinToken(cluster, server, ttlMs);
  }

  async issueUserToken(name: string, user: string, groups: string[], ttlMs: number): Promise<UserToken> {
    validateClusterName(name);
    checkIdentity("user", user);
    const uniqueGroups = uniqueIdentities("group", groups);
    checkTtlMs("--ttl", ttlMs, MAX_USER_TOKEN_TTL_MS);
    const server = await this.server();
    await this.#existing(name);
    const ca = await this.store.loadOrCreateCa();
    const { token, hash } = issueToken();
    const expiresAt = new Date(Date.now() + ttlMs).toISOString();
    await this.store.addToken({
      hash,
      kind: "user",
      user,
      groups: uniqueGroups,
      clusters: [name],
      expiresAt,
    });
    return { cluster: name, user, groups: uniqueGroups, token, expiresAt, server, caPem: ca.certPem };
  }

  async allowService(
    name: string,
    service: string,
    users: string[],
    groups: string[],
  ): Promise<ServiceGrant> {
    checkServiceName(service);
    const newUsers = uniqueAllowed("user", users);
    const newGroups = uniqueAllowed("group", groups);
    const cluster = await this.#existing(name);
    const was = cluster.services?.[service] ?? { allowedUsers: [], allowedGroups: [] };
    const access = {
      allowedUsers: [...new Set([...was.allowedUsers, ...newUsers])],
      allowedGroups: [...new Set([...was.allowedGroups, ...newGroups])],
    };
    await this.store.putCluster({ ...cluster, services: { ...cluster.services, [service]: access } });
    return { cluster: name, service, ...access };
  }

  async removeService(
    name: string,
    service: string,
  ): Promise<{ cluster: string; service: string; removed: boolean }> {
    checkServiceName(service);
    const cluster = await this.#existing(name);
    if (!cluster.services?.[service]) return { cluster: name, service, removed: false };
    const { [service]: _dropped, ...rest } = cluster.services;
    const { services: _all, ...record } = cluster;
    await this.store.putCluster(Object.keys(rest).length > 0 ? { ...record, services: rest } : record);
    return { cluster: name, service, removed: true };
  }

  async memberEndpoint(name: string): Promise<MemberEndpoint> {
    const server = await this.server();
    const { allowedUsers, allowedGroups } = await this.#existing(name);
    const ca = await this.store.loadOrCreateCa();
    return { cluster: name, server, caPem: ca.certPem, allowedUsers, allowedGroups };
  }

  listTokens(user?: string): Promise<TokenInfo[]> {
    return listUserTokens(this.store, user);
  }

  revokeTokens(selector: TokenSelector): Promise<TokenInfo[]> {
    return revokeUserTokens(this.store, selector);
  }

  async #existing(name: string): Promise<ClusterRecord> {
    validateClusterName(name);
    const cluster = await this.store.getCluster(name);
    if (!cluster) {
      return fail(
        ERR_TETHER_UNKNOWN_CLUSTER,
        `no cluster named ${name}; "tether-server cluster list" shows them, "tether-server cluster add ${name}" adds it`,
      );
    }
    // The store's copy is frozen; the admin commands work on their own.
    return structuredClone(cluster) as ClusterRecord;
  }

  async #issueJoinToken(cluster: ClusterInput, server: string, ttlMs: number): Promise<JoinInfo> {
    const { caHash } = await this.store.loadOrCreateCa();
    const { token, hash } = issueToken();
    const expiresAt = new Date(Date.now() + ttlMs).toISOString();
    await this.store.addToken({ hash, kind: "join", cluster: cluster.name, expiresAt });
    return {
      name: cluster.name,
      server,
      token,
      caHash,
      expiresAt,
      agentCommand: agentCommand(server, cluster.name, token, caHash),
      auth: cluster.auth,
      labels: cluster.labels,
      allowedUsers: cluster.allowedUsers,
      allowedGroups: cluster.allowedGroups,
    };
  }
}

/** A ClusterAdmin on `store`, with `--server` (or the URL `serve` recorded) for printed commands and kubeconfigs. */
export function storeAdmin(store: Store, serverFlag?: string): StoreClusterAdmin {
  let server: Promise<string> | undefined;
  return new StoreClusterAdmin(store, () => {
    server ??= resolveServerUrl(store, serverFlag);
    return server;
  });
}
