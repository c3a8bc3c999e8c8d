// The admin commands of tether-server (cluster add/list/remove, join-token,
// kubeconfig). They work directly on the state directory's FileStore, which
// locks across processes, so they are safe to run while a server uses the
// same directory; the server notices removed clusters by itself.
//
// Every input is validated before anything is written. Errors carry a code
// (`err.code`) and a one-line message. Tokens are written to `out` only by the
// command that creates them, and never logged.
import { readFile } from "node:fs/promises";
import { isIP } from "node:net";
import { join, resolve } from "node:path";
import { parseJsonText, writeFileAtomic } from "./atomic-file.js";
import {
  formatAs,
  formatFields,
  formatJson,
  formatTable,
  formatYaml,
  type OutputFormat,
} from "./output-format.js";
import { validateClusterName } from "./pki.js";
import { type AuthMode, type ClusterRecord, FileStore, type TokenRecord } from "./state-store.js";
import { issueToken } from "./tokens.js";

export const ERR_TETHER_CLUSTER_EXISTS = "ERR_TETHER_CLUSTER_EXISTS";
export const ERR_TETHER_UNKNOWN_CLUSTER = "ERR_TETHER_UNKNOWN_CLUSTER";
export const ERR_TETHER_NO_SERVER_URL = "ERR_TETHER_NO_SERVER_URL";
export const ERR_TETHER_BAD_SERVER_URL = "ERR_TETHER_BAD_SERVER_URL";
export const ERR_TETHER_BAD_DURATION = "ERR_TETHER_BAD_DURATION";
export const ERR_TETHER_BAD_LABEL = "ERR_TETHER_BAD_LABEL";
export const ERR_TETHER_BAD_AUTH_MODE = "ERR_TETHER_BAD_AUTH_MODE";
export const ERR_TETHER_BAD_IDENTITY = "ERR_TETHER_BAD_IDENTITY";
export const ERR_TETHER_RESERVED_GROUP = "ERR_TETHER_RESERVED_GROUP";
export const ERR_TETHER_RESERVED_USER = "ERR_TETHER_RESERVED_USER";

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

export const DEFAULT_JOIN_TOKEN_TTL = "24h";
export const MAX_JOIN_TOKEN_TTL_MS = 30 * DAY;
export const DEFAULT_USER_TOKEN_TTL = "24h";
export const MAX_USER_TOKEN_TTL_MS = 365 * DAY;

/** Name of the file in the state directory where `serve` records the URL agents and callers use. */
export const SERVER_INFO_FILE = "server.json";

export class TetherCliError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = "TetherCliError";
    this.code = code;
  }
}

const fail = (code: string, message: string): never => {
  throw new TetherCliError(code, message);
};

/** Quotes user input for an error message: JSON-escaped (so one line) and cut short. */
const q = (s: string) => (s.length > 80 ? JSON.stringify(s.slice(0, 80)) + "…" : JSON.stringify(s));

// ---------------------------------------------------------------------------
// Parsing and validation

const UNITS: Record<string, number> = { s: SECOND, m: MINUTE, h: HOUR, d: DAY };

/**
 * Milliseconds of a duration like `90s`, `15m`, `24h`, `7d` or `1h30m` (whole
 * numbers, units s/m/h/d). Throws ERR_TETHER_BAD_DURATION otherwise.
 */
export function parseDuration(text: string): number {
  const s = String(text).trim();
  if (/^(\d{1,9}[smhd])+$/.test(s)) {
    let ms = 0;
    for (const m of s.matchAll(/(\d+)([smhd])/g)) ms += Number(m[1]) * UNITS[m[2]!]!;
    return ms;
  }
  return fail(
    ERR_TETHER_BAD_DURATION,
    `invalid duration ${q(s)}: use a whole number with a unit s, m, h or d, e.g. 90s, 15m, 24h, 7d (or 1h30m)`,
  );
}

/** A duration for `option`, which must be > 0 and at most `maxMs`. */
export function parseTtl(option: string, text: string, maxMs: number): number {
  const ms = parseDuration(text);
  if (ms <= 0) fail(ERR_TETHER_BAD_DURATION, `${option} must be longer than 0, got ${q(text)}`);
  if (ms > maxMs) {
    fail(ERR_TETHER_BAD_DURATION, `${option} must be at most ${formatDuration(maxMs)}, got ${q(text)}`);
  }
  return ms;
}

/** `ms` in the largest unit that divides it: 30d, 24h, 90s. */
export function formatDuration(ms: number): string {
  for (const [unit, size] of [
    ["d", DAY],
    ["h", HOUR],
    ["m", MINUTE],
  ] as const) {
    if (ms % size === 0 && ms >= size) return `${ms / size}${unit}`;
  }
  return `${Math.round(ms / SECOND)}s`;
}

// Kubernetes label syntax: an optional DNS-subdomain prefix and "/", a name of
// at most 63 characters; values of at most 63 characters, possibly empty.
const LABEL_NAME_RE = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const DNS_SUBDOMAIN_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** `k=v` strings to a label map; Kubernetes label syntax; a key may be given once. */
export function parseLabels(items: string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const item of items) {
    const eq = item.indexOf("=");
    if (eq < 0) fail(ERR_TETHER_BAD_LABEL, `invalid label ${q(item)}: use key=value, e.g. --label region=eu`);
    const key = item.slice(0, eq);
    const value = item.slice(eq + 1);
    const slash = key.lastIndexOf("/");
    const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
    const name = slash >= 0 ? key.slice(slash + 1) : key;
    if (
      !LABEL_NAME_RE.test(name) ||
      (prefix !== undefined && (prefix.length > 253 || !DNS_SUBDOMAIN_RE.test(prefix)))
    ) {
      fail(
        ERR_TETHER_BAD_LABEL,
        `invalid label key ${q(key)}: a key is an optional DNS-subdomain prefix and "/", then up to 63 ` +
          `letters, digits, '-', '_' or '.', starting and ending with a letter or digit`,
      );
    }
    if (value !== "" && !LABEL_NAME_RE.test(value)) {
      fail(
        ERR_TETHER_BAD_LABEL,
        `invalid value for label ${q(key)}: a value is empty or up to 63 letters, digits, '-', '_' or '.', ` +
          `starting and ending with a letter or digit`,
      );
    }
    if (Object.hasOwn(labels, key)) fail(ERR_TETHER_BAD_LABEL, `label ${q(key)} is given more than once`);
    labels[key] = value;
  }
  return labels;
}

export function parseAuthMode(mode: string): AuthMode {
  if (mode === "impersonate" || mode === "passthrough") return mode;
  return fail(ERR_TETHER_BAD_AUTH_MODE, `invalid --auth ${q(mode)}: use impersonate or passthrough`);
}

/**
 * A user or group name for Tether identities: non-empty, at most 256
 * characters, no control characters (it ends up in HTTP headers), and not in
 * Kubernetes' reserved `system:` namespace. Tether prefixes identities with
 * `tether:` before they reach a member cluster, so a `system:` name could
 * never mean what it says: it is always a mistake.
 */
export function checkIdentity(kind: "user" | "group", name: string): string {
  if (name.length === 0 || name.length > 256 || /[\p{Cc}\p{Zl}\p{Zp}]/u.test(name) || name.trim() !== name) {
    fail(
      ERR_TETHER_BAD_IDENTITY,
      `invalid ${kind} name ${q(name)}: 1 to 256 characters, no control characters or surrounding spaces`,
    );
  }
  if (name.toLowerCase().startsWith("system:")) {
    fail(
      kind === "group" ? ERR_TETHER_RESERVED_GROUP : ERR_TETHER_RESERVED_USER,
      `${kind} name ${q(name)} is reserved: "system:" names belong to Kubernetes itself ` +
        `(Tether sends identities to member clusters prefixed with "tether:"); ` +
        `choose another name and bind it with RBAC in the member cluster`,
    );
  }
  return name;
}

function uniqueIdentities(kind: "user" | "group", names: string[]): string[] {
  return [...new Set(names.map((n) => checkIdentity(kind, n)))];
}

/** An https URL without a trailing slash, query or fragment. */
export function normalizeServerUrl(text: string, from: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return fail(
      ERR_TETHER_BAD_SERVER_URL,
      `${from}: ${q(text)} is not a URL; use e.g. https://tether.example.com:8443`,
    );
  }
  if (url.protocol !== "https:") {
    fail(
      ERR_TETHER_BAD_SERVER_URL,
      `${from}: ${q(text)} must be an https:// URL (tether-server only speaks TLS)`,
    );
  }
  if (url.search || url.hash || url.username || url.password) {
    fail(ERR_TETHER_BAD_SERVER_URL, `${from}: ${q(text)} must not have credentials, a query or a fragment`);
  }
  return url.href.replace(/\/+$/, "");
}

/**
 * The URL `serve` records for the admin commands: `externalUrl` if given, else
 * https://<listen host>:<port>, with 127.0.0.1 for a wildcard listen address.
 */
export function serveUrl(listenHost: string, port: number, externalUrl?: string): string {
  if (externalUrl) return externalUrl;
  const wildcard =
    listenHost === "" || listenHost === "0.0.0.0" || listenHost === "::" || listenHost === "[::]";
  const host = wildcard ? "127.0.0.1" : isIP(listenHost) === 6 ? `[${listenHost}]` : listenHost;
  return `https://${host}:${port}`;
}

/** Writes `<stateDir>/server.json` = `{ "url": url }` atomically (called by `serve` once it listens). */
export async function recordServerUrl(stateDir: string, url: string): Promise<void> {
  await writeFileAtomic(join(stateDir, SERVER_INFO_FILE), JSON.stringify({ url }, null, 2) + "\n", 0o644);
}

/** `--server` if given, else the URL `serve` recorded in the state directory; ERR_TETHER_NO_SERVER_URL otherwise. */
export async function resolveServerUrl(stateDir: string, flag: string | undefined): Promise<string> {
  if (flag !== undefined) return normalizeServerUrl(flag, "--server");
  const path = join(stateDir, SERVER_INFO_FILE);
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    return fail(
      ERR_TETHER_NO_SERVER_URL,
      `no server URL: pass --server https://<host>:<port> (the URL agents and callers reach tether-server at), ` +
        `or run "tether-server serve" with this state directory once so that it records its URL in ${path}`,
    );
  }
  const info = parseJsonText<unknown>(path, text);
  if (typeof info !== "object" || info === null || typeof (info as { url?: unknown }).url !== "string") {
    return fail(ERR_TETHER_NO_SERVER_URL, `${path} has no "url"; pass --server https://<host>:<port>`);
  }
  return normalizeServerUrl((info as { url: string }).url, path);
}

// ---------------------------------------------------------------------------
// Commands

export interface AdminContext {
  stateDir: string;
  /** Where command output goes (stdout in the CLI). */
  out: (text: string) => void;
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

/** Shell-quotes `s` unless it is made only of safe characters. */
function shellQuote(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

export function agentCommand(server: string, cluster: string, token: string, caHash: string): string {
  return ["tether-agent", "--server", server, "--cluster", cluster, "--token", token, "--ca-hash", caHash]
    .map(shellQuote)
    .join(" ");
}

async function issueJoinToken(
  store: FileStore,
  cluster: ClusterRecord,
  server: string,
  ttlMs: number,
): Promise<JoinInfo> {
  const { caHash } = await store.loadOrCreateCa();
  const { token, hash } = issueToken();
  const expiresAt = new Date(Date.now() + ttlMs).toISOString();
  await store.addToken({ hash, kind: "join", cluster: cluster.name, expiresAt });
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
  validateClusterName(name);
  const record: ClusterRecord = {
    name,
    auth: parseAuthMode(opts.auth ?? "impersonate"),
    labels: parseLabels(opts.labels ?? []),
    allowedUsers: uniqueIdentities("user", opts.allowUsers ?? []),
    allowedGroups: uniqueIdentities("group", opts.allowGroups ?? []),
    createdAt: new Date().toISOString(),
  };
  const ttlMs = parseTtl("--token-ttl", opts.tokenTtl ?? DEFAULT_JOIN_TOKEN_TTL, MAX_JOIN_TOKEN_TTL_MS);
  const server = await resolveServerUrl(resolve(ctx.stateDir), opts.server);
  const store = await FileStore.open(ctx.stateDir);
  if (!(await store.addCluster(record))) {
    fail(
      ERR_TETHER_CLUSTER_EXISTS,
      `cluster ${name} already exists; for a new join token run "tether-server join-token ${name}", ` +
        `or "tether-server cluster remove ${name}" first to start over`,
    );
  }
  const info = await issueJoinToken(store, record, server, ttlMs);
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
  validateClusterName(name);
  const ttlMs = parseTtl("--token-ttl", opts.tokenTtl ?? DEFAULT_JOIN_TOKEN_TTL, MAX_JOIN_TOKEN_TTL_MS);
  const server = await resolveServerUrl(resolve(ctx.stateDir), opts.server);
  const store = await FileStore.open(ctx.stateDir);
  const cluster = await getExisting(store, name);
  const info = await issueJoinToken(store, cluster, server, ttlMs);
  printJoinInfo(ctx, info, opts.output, false);
  return info;
}

async function getExisting(store: FileStore, name: string): Promise<ClusterRecord> {
  const cluster = await store.getCluster(name);
  if (!cluster) {
    return fail(
      ERR_TETHER_UNKNOWN_CLUSTER,
      `no cluster named ${name}; "tether-server cluster list" shows them, "tether-server cluster add ${name}" adds it`,
    );
  }
  return cluster;
}

/** `cluster list`. */
export async function clusterList(
  ctx: AdminContext,
  opts: { output?: OutputFormat } = {},
): Promise<ClusterRecord[]> {
  const store = await FileStore.open(ctx.stateDir);
  const clusters = await store.listClusters();
  const format = opts.output ?? "table";
  if (format === "table" && clusters.length === 0) {
    ctx.out(`No clusters in ${store.dir}. Add one with: tether-server cluster add NAME\n`);
    return clusters;
  }
  ctx.out(
    formatAs(format, { clusters }, () =>
      formatTable(
        ["name", "auth", "labels", "allowed users", "allowed groups", "created"],
        clusters.map((c) => [
          c.name,
          c.auth,
          Object.entries(c.labels)
            .map(([k, v]) => `${k}=${v}`)
            .join(","),
          c.allowedUsers.join(","),
          c.allowedGroups.join(","),
          c.createdAt,
        ]),
      ),
    ),
  );
  return clusters;
}

export interface RemoveResult {
  name: string;
  joinTokensDeleted: number;
  userTokensDeleted: number;
  userTokensNarrowed: number;
}

/**
 * `cluster remove NAME`: revokes the cluster's agent certificates, deletes its
 * unused join tokens and the user tokens scoped to it alone (so that a later
 * cluster of the same name doesn't inherit them; tokens scoped to several
 * clusters lose this one), then deletes the record. A running server cuts the
 * agent off when it sees the record go.
 */
export async function clusterRemove(ctx: AdminContext, name: string): Promise<RemoveResult> {
  validateClusterName(name);
  const store = await FileStore.open(ctx.stateDir);
  await getExisting(store, name);
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

export interface KubeconfigOptions {
  user: string;
  groups?: string[];
  ttl?: string;
  server?: string;
  output?: "yaml" | "json";
}

export interface KubeconfigResult {
  kubeconfig: Record<string, unknown>;
  token: string;
  expiresAt: string;
}

/** `kubeconfig NAME --user U`: issues a user token scoped to the cluster and prints a kubeconfig using it. */
export async function kubeconfig(
  ctx: AdminContext,
  name: string,
  opts: KubeconfigOptions,
): Promise<KubeconfigResult> {
  validateClusterName(name);
  const user = checkIdentity("user", opts.user);
  const groups = uniqueIdentities("group", opts.groups ?? []);
  const ttlMs = parseTtl("--ttl", opts.ttl ?? DEFAULT_USER_TOKEN_TTL, MAX_USER_TOKEN_TTL_MS);
  const server = await resolveServerUrl(resolve(ctx.stateDir), opts.server);
  const store = await FileStore.open(ctx.stateDir);
  await getExisting(store, name);
  const ca = await store.loadOrCreateCa();
  const { token, hash } = issueToken();
  const expiresAt = new Date(Date.now() + ttlMs).toISOString();
  await store.addToken({ hash, kind: "user", user, groups, clusters: [name], expiresAt });
  const userEntry = `${user}@${name}`;
  const config = {
    apiVersion: "v1",
    kind: "Config",
    clusters: [
      {
        name,
        cluster: {
          server: `${server}/clusters/${name}`,
          "certificate-authority-data": Buffer.from(ca.certPem, "utf8").toString("base64"),
        },
      },
    ],
    users: [{ name: userEntry, user: { token } }],
    contexts: [{ name, context: { cluster: name, user: userEntry } }],
    "current-context": name,
    preferences: {},
  };
  if (opts.output === "json") {
    ctx.out(formatJson(config));
  } else {
    ctx.out(`# Tether kubeconfig for cluster ${name}, user ${q(user)}; the token expires ${expiresAt}.\n`);
    ctx.out(formatYaml(config));
  }
  return { kubeconfig: config, token, expiresAt };
}
