// The admin commands of tether-server (cluster add/list/remove, join-token,
// kubeconfig): they parse what the operator typed, call a ClusterAdmin
// (cluster-admin.ts) and print the result. Tokens are written to `out` only by
// the command that creates them, and never logged.

import { join } from "node:path";
import { rotateAdminCredential } from "../admin/admin-credential.js";
import {
  DEFAULT_JOIN_TOKEN_TTL,
  DEFAULT_USER_TOKEN_TTL,
  MAX_JOIN_TOKEN_TTL_MS,
  MAX_USER_TOKEN_TTL_MS,
  parseAuthMode,
  parseLabels,
  parseTtl,
  q,
} from "../admin/admin-input.js";
import type {
  ClusterAdmin,
  JoinInfo,
  ListedCluster,
  RemoveResult,
  ServiceGrant,
  UserToken,
} from "../admin/cluster-admin.js";
import { kubeconfigServer } from "../proxy/host-routing.js";
import { FileStore } from "../store/file-store.js";
import { ADMIN_CREDENTIAL_FILE, type Store } from "../store/state-store.js";
import {
  formatAs,
  formatFields,
  formatJson,
  formatTable,
  formatYaml,
  type OutputFormat,
} from "./output-format.js";

export interface AdminContext {
  /** Where command output goes (stdout in the CLI). */
  out: (text: string) => void;
  /** The ClusterAdmin to act on, given the command's --server flag. */
  admin: (serverFlag?: string) => Promise<ClusterAdmin>;
}

function printJoinInfo(
  ctx: AdminContext,
  info: JoinInfo,
  output: "json" | "yaml" | undefined,
  added: boolean,
) {
  if (output === "json") return ctx.out(formatJson(info));
  if (output === "yaml") return ctx.out(formatYaml(info));
  const labels = Object.entries(info.labels).map(([k, v]) => `${k}=${v}`);
  ctx.out(
    (added ? `Cluster ${info.name} added.\n` : `New join token for cluster ${info.name}.\n`) +
      formatFields([
        ["Server", info.server],
        ["Auth", info.auth],
        ...(added ? ([["Labels", labels.join(",") || "<none>"]] as [string, string][]) : []),
        ["CA hash", info.caHash],
        ["Join token", info.token],
        ["Expires", `${info.expiresAt} (single use)`],
      ]) +
      `\nRun the agent in cluster ${info.name} with:\n\n  ${info.agentCommand}\n\n` +
      `The token is shown only this once; "tether-server join-token ${info.name}" makes a new one.\n`,
  );
}

export interface ClusterAddOptions {
  labels?: string[];
  auth?: string;
  allowUsers?: string[];
  allowGroups?: string[];
  tokenTtl?: string;
  server?: string;
  output?: "json" | "yaml";
}

/** `cluster add NAME`: registers the cluster and prints a one-time join token and the agent command. */
export async function clusterAdd(
  ctx: AdminContext,
  name: string,
  opts: ClusterAddOptions = {},
): Promise<JoinInfo> {
  const spec = {
    name,
    auth: parseAuthMode(opts.auth ?? "impersonate"),
    labels: parseLabels(opts.labels ?? []),
    allowedUsers: opts.allowUsers ?? [],
    allowedGroups: opts.allowGroups ?? [],
  };
  const ttlMs = parseTtl("--token-ttl", opts.tokenTtl ?? DEFAULT_JOIN_TOKEN_TTL, MAX_JOIN_TOKEN_TTL_MS);
  const info = await (await ctx.admin(opts.server)).addCluster(spec, ttlMs);
  printJoinInfo(ctx, info, opts.output, true);
  return info;
}

export interface JoinTokenOptions {
  tokenTtl?: string;
  server?: string;
  output?: "json" | "yaml";
}

/** `join-token NAME`: a new one-time join token for an existing cluster. */
export async function joinToken(
  ctx: AdminContext,
  name: string,
  opts: JoinTokenOptions = {},
): Promise<JoinInfo> {
  const ttlMs = parseTtl("--token-ttl", opts.tokenTtl ?? DEFAULT_JOIN_TOKEN_TTL, MAX_JOIN_TOKEN_TTL_MS);
  const info = await (await ctx.admin(opts.server)).newJoinToken(name, ttlMs);
  printJoinInfo(ctx, info, opts.output, false);
  return info;
}

/**
 * `cluster list`. Through a running server (--credential) each cluster comes
 * with its agent session there; read from the store alone, nobody knows, and
 * the connection columns say "unknown" (`connection: null` in json and yaml).
 */
export async function clusterList(
  ctx: AdminContext,
  opts: { output?: OutputFormat; server?: string } = {},
): Promise<ListedCluster[]> {
  const admin = await ctx.admin(opts.server);
  const clusters = await admin.listClusters();
  const format = opts.output ?? "table";
  if (format === "table" && clusters.length === 0) {
    ctx.out(`No clusters in ${admin.where}. Add one with: tether-server cluster add NAME\n`);
    return clusters;
  }
  const listed = clusters.map((c) => ({ ...c, connection: c.connection ?? null }));
  const live = (c: ListedCluster, value: (k: NonNullable<ListedCluster["connection"]>) => string) =>
    c.connection ? value(c.connection) : "unknown";
  const orDash = (v: string | number | undefined, unit = "") => (v === undefined ? "-" : `${v}${unit}`);
  ctx.out(
    formatAs(format, { clusters: listed }, () =>
      formatTable(
        [
          "name",
          "auth",
          "labels",
          "connected",
          "rtt",
          "agent",
          "kubernetes",
          "allowed users",
          "allowed groups",
          "created",
        ],
        clusters.map((c) => [
          c.name,
          c.auth,
          Object.entries(c.labels)
            .map(([k, v]) => `${k}=${v}`)
            .join(","),
          live(c, (k) => (k.connected ? "yes" : "no")),
          live(c, (k) => orDash(k.rttMs, "ms")),
          live(c, (k) => orDash(k.agentVersion)),
          live(c, (k) => orDash(k.kubernetesVersion)),
          c.allowedUsers.join(","),
          c.allowedGroups.join(","),
          c.createdAt,
        ]),
      ),
    ),
  );
  return clusters;
}

/** `cluster remove NAME`: see ClusterAdmin.removeCluster. */
export async function clusterRemove(
  ctx: AdminContext,
  name: string,
  opts: { server?: string } = {},
): Promise<RemoveResult> {
  const result = await (await ctx.admin(opts.server)).removeCluster(name);
  const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? "" : "s"}`;
  ctx.out(
    `Cluster ${name} removed: revoked its agent certificates, deleted ` +
      `${plural(result.joinTokensDeleted, "unused join token")} and ` +
      `${plural(result.userTokensDeleted, "user token")} scoped to it` +
      (result.userTokensNarrowed > 0
        ? `, and took it out of ${plural(result.userTokensNarrowed, "multi-cluster user token")}`
        : "") +
      ".\n",
  );
  return result;
}

/** `cluster service allow CLUSTER SERVICE`: adds users and groups to those allowed an exposed service. */
export async function serviceAllow(
  ctx: AdminContext,
  name: string,
  service: string,
  opts: {
    users: string[];
    groups: string[];
    server?: string | undefined;
    output?: "json" | "yaml" | undefined;
  },
): Promise<ServiceGrant> {
  const grant = await (await ctx.admin(opts.server)).allowService(name, service, opts.users, opts.groups);
  if (opts.output) ctx.out(formatAs(opts.output, grant, () => ""));
  else
    ctx.out(
      `Service ${service} of cluster ${name} may be used by:\n` +
        formatFields([
          ["Users", grant.allowedUsers.join(",") || "<none>"],
          ["Groups", grant.allowedGroups.join(",") || "<none>"],
        ]) +
        `\nIt is reached at /clusters/${name}/services/${service}/ once the agent runs with --expose ${service}=URL.\n`,
    );
  return grant;
}

/** `cluster service remove CLUSTER SERVICE`: nobody may use the service any more. */
export async function serviceRemove(
  ctx: AdminContext,
  name: string,
  service: string,
  opts: { server?: string | undefined } = {},
): Promise<boolean> {
  const { removed } = await (await ctx.admin(opts.server)).removeService(name, service);
  ctx.out(
    removed
      ? `Service ${service} of cluster ${name}: nobody may use it now.\n`
      : `Service ${service} of cluster ${name} allowed nobody already.\n`,
  );
  return removed;
}

export interface KubeconfigOptions {
  user: string;
  groups?: string[];
  ttl?: string;
  server?: string;
  output?: "yaml" | "json";
  /** Print the host form for this --cluster-domain (proxy/host-routing.ts). */
  clusterDomain?: string | undefined;
}

export interface KubeconfigResult {
  kubeconfig: Record<string, unknown>;
  token: string;
  expiresAt: string;
}

/** A kubeconfig for `/clusters/<cluster>` (or, with a cluster domain, its host name) that authenticates with the user token. */
export function userKubeconfig(issued: UserToken, clusterDomain?: string): Record<string, unknown> {
  const { cluster, user, token, server, caPem } = issued;
  const userEntry = `${user}@${cluster}`;
  return {
    apiVersion: "v1",
    kind: "Config",
    clusters: [
      {
        name: cluster,
        cluster: {
          ...kubeconfigServer(server, cluster, clusterDomain),
          "certificate-authority-data": Buffer.from(caPem, "utf8").toString("base64"),
        },
      },
    ],
    users: [{ name: userEntry, user: { token } }],
    contexts: [{ name: cluster, context: { cluster, user: userEntry } }],
    "current-context": cluster,
    preferences: {},
  };
}

/** `kubeconfig NAME --user U`: issues a user token scoped to the cluster and prints a kubeconfig using it. */
export async function kubeconfig(
  ctx: AdminContext,
  name: string,
  opts: KubeconfigOptions,
): Promise<KubeconfigResult> {
  const ttlMs = parseTtl("--ttl", opts.ttl ?? DEFAULT_USER_TOKEN_TTL, MAX_USER_TOKEN_TTL_MS);
  const issued = await (await ctx.admin(opts.server)).issueUserToken(
    name,
    opts.user,
    opts.groups ?? [],
    ttlMs,
  );
  const config = userKubeconfig(issued, opts.clusterDomain);
  if (opts.output === "json") {
    ctx.out(formatJson(config));
  } else {
    ctx.out(
      `# Tether kubeconfig for cluster ${name}, user ${q(issued.user)}; the token expires ${issued.expiresAt}.\n`,
    );
    ctx.out(formatYaml(config));
  }
  return { kubeconfig: config, token: issued.token, expiresAt: issued.expiresAt };
}

/** `rotate-admin-credential`: on the store itself, never through the admin API. */
export async function adminCredentialRotate(store: Store, out: (text: string) => void): Promise<void> {
  const credential = await rotateAdminCredential(store);
  const where =
    store instanceof FileStore
      ? join(store.dir, ADMIN_CREDENTIAL_FILE)
      : `the Secret tether-admin-credential, ${store.describe()}`;
  out(
    `Admin credential rotated: every earlier copy is revoked now.\n` +
      `The new one (valid until ${credential.expiresAt}) is in ${where}; copy it to the admins' machines (0600).\n`,
  );
}
