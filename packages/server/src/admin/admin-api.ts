// The admin API under /admin/v1/: the admin commands, reachable over HTTPS
// for `tether-server ... --credential FILE`. It authenticates admin tokens
// only (admin-credential.ts) and hands the work to StoreClusterAdmin, which
// validates every input; bodies are bounded and must have exactly the
// expected fields. Answers are JSON; errors are {code, message} with the
// same codes and messages the local CLI prints.
//
//   GET    /admin/v1/clusters                          -> {clusters} (each with its connection here)
//   POST   /admin/v1/clusters             {name, auth?, labels?, allowedUsers?, allowedGroups?, tokenTtlMs}
//   DELETE /admin/v1/clusters/NAME                     -> RemoveResult
//   POST   /admin/v1/clusters/NAME/join-tokens  {ttlMs} -> JoinInfo
//   POST   /admin/v1/clusters/NAME/user-tokens  {user, groups?, ttlMs} -> UserToken
//   POST   /admin/v1/clusters/NAME/services/SVC {allowedUsers?, allowedGroups?} -> ServiceGrant (added to)
//   DELETE /admin/v1/clusters/NAME/services/SVC        -> {cluster, service, removed}
//   GET    /admin/v1/tokens[?user=U]               -> {tokens} (token-admin.ts TokenInfo, never a secret)
//   POST   /admin/v1/token-revocations    {id}|{user} -> {revoked}
import type { IncomingMessage, ServerResponse } from "node:http";
import type { TLSSocket } from "node:tls";
import { httpStatusOf } from "../errors.js";
import { readBounded } from "../join/join-endpoint.js";
import type { Logger } from "../logger.js";
import type { ClusterConnection } from "../observe/status-model.js";
import type { AuditLog } from "../observe/audit-log.js";
import { bearerToken, hashToken, looksLikeToken } from "../pki/tokens.js";
import type { Store } from "../store/state-store.js";
import { TetherCliError } from "./admin-input.js";
import type { ClusterAdmin } from "./cluster-admin.js";
import type { TokenSelector } from "./token-admin.js";

export const ADMIN_API_PREFIX = "/admin/v1/";
export const ERR_TETHER_ADMIN_UNAUTHORIZED = "ERR_TETHER_ADMIN_UNAUTHORIZED";
export const ERR_TETHER_ADMIN_FORBIDDEN = "ERR_TETHER_ADMIN_FORBIDDEN";
export const ERR_TETHER_ADMIN_BAD_REQUEST = "ERR_TETHER_ADMIN_BAD_REQUEST";
export const ERR_TETHER_ADMIN_NOT_FOUND = "ERR_TETHER_ADMIN_NOT_FOUND";

export interface AdminApiDeps {
  store: Store;
  admin: ClusterAdmin;
  log: Logger;
  /** Runs once a cluster is removed: the server closes its live sessions at once. */
  onClusterRemoved?: (name: string) => void;
  /** The cluster's agent session on this server, for `cluster list`. */
  connection?: (name: string) => ClusterConnection;
  audit?: AuditLog;
  /** Runs once user tokens are revoked (their ids): the server ends what they hold open at once. */
  onTokensRevoked?: (ids: string[]) => void;
}

type Body = Record<string, unknown>;

const bad = (message: string): never => {
  throw new TetherCliError(ERR_TETHER_ADMIN_BAD_REQUEST, message);
};

/** `body` with exactly the allowed keys, each of the type its checker accepts. */
function fields(body: Body, spec: Record<string, (v: unknown) => boolean>, required: string[]): Body {
  for (const key of Object.keys(body)) {
    if (!Object.hasOwn(spec, key)) bad(`unknown field ${JSON.stringify(key.slice(0, 40))}`);
    if (!spec[key]!(body[key])) bad(`field ${key} has the wrong type`);
  }
  for (const key of required) if (!Object.hasOwn(body, key)) bad(`field ${key} is required`);
  return body;
}

const isString = (v: unknown) => typeof v === "string";
const isStrings = (v: unknown) =>
  Array.isArray(v) && v.length <= 256 && v.every((s) => typeof s === "string");
const isMs = (v: unknown) => typeof v === "number" && Number.isSafeInteger(v);
const isLabels = (v: unknown) =>
  typeof v === "object" &&
  v !== null &&
  !Array.isArray(v) &&
  Object.keys(v).length <= 64 &&
  Object.values(v).every((s) => typeof s === "string");

export class AdminApi {
  constructor(private readonly deps: AdminApiDeps) {}

  async handle(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    let authorized = false;
    try {
      await this.authorize(req);
      authorized = true;
      const result = await this.route(req, path);
      send(res, result.status, result.body);
    } catch (err) {
      // The status comes from the code (errors.ts), whichever class threw it.
      // Until the caller is known to be the admin, only the refusal is told:
      // a store's message may name hosts and paths.
      const code = codeOf(err);
      const status =
        authorized || code === ERR_TETHER_ADMIN_UNAUTHORIZED || code === ERR_TETHER_ADMIN_FORBIDDEN
          ? httpStatusOf(err)
          : undefined;
      if (status !== undefined && status !== 500) {
        const message = (err as Error).message;
        if (status >= 401 && status <= 403) this.deps.log.info({ code }, "admin API request refused");
        if (status >= 500) this.deps.log.warn({ code, err: message }, "admin API request failed");
        send(res, status, { code, message });
      } else {
        this.deps.log.error({ err: (err as Error).message }, "admin API request failed");
        send(res, 500, { code: "ERR_TETHER_INTERNAL", message: "tether-server failed; see its log" });
      }
    }
  }

  private async authorize(req: IncomingMessage): Promise<void> {
    const token = bearerToken(req.headers.authorization);
    if (!token && (req.socket as TLSSocket).authorized) {
      // A cluster or user certificate from Tether's CA: a known caller, but never an admin.
      throw new TetherCliError(
        ERR_TETHER_ADMIN_FORBIDDEN,
        "a certificate may not use the admin API: it needs the admin token, from the admin credential `serve` wrote",
      );
    }
    if (!token || !looksLikeToken(token)) {
      throw new TetherCliError(
        ERR_TETHER_ADMIN_UNAUTHORIZED,
        "the admin API needs the admin token: pass --credential with the admin credential file `serve` wrote",
      );
    }
    const record = await this.deps.store.findToken(hashToken(token));
    if (!record) {
      throw new TetherCliError(
        ERR_TETHER_ADMIN_UNAUTHORIZED,
        "unknown or expired token: get the current admin credential from the server's state",
      );
    }
    if (record.kind !== "admin") {
      throw new TetherCliError(ERR_TETHER_ADMIN_FORBIDDEN, "this token may not use the admin API");
    }
  }

  private async route(req: IncomingMessage, path: string): Promise<{ status: number; body: unknown }> {
    const { admin } = this.deps;
    const parts = path.slice(ADMIN_API_PREFIX.length).split("/");
    const method = req.method ?? "GET";
    if (parts.length === 1 && (parts[0] === "tokens" || parts[0] === "token-revocations")) {
      return this.tokens(req, parts[0], method, path);
    }
    const servicePath = parts.length === 4 && parts[2] === "services";
    if (parts[0] !== "clusters" || (parts.length > 3 && !servicePath)) return notFound(method, path);
    const name = parts[1] === undefined ? undefined : decodeSegment(parts[1]);
    if (parts.length === 1) {
      if (method === "GET") {
        const { connection } = this.deps;
        const clusters = await admin.listClusters();
        return {
          status: 200,
          body: {
            clusters: connection ? clusters.map((c) => ({ ...c, connection: connection(c.name) })) : clusters,
          },
        };
      }
      if (method === "POST") {
        const b = fields(
          await readJson(req),
          {
            name: isString,
            auth: isString,
            labels: isLabels,
            allowedUsers: isStrings,
            allowedGroups: isStrings,
            tokenTtlMs: isMs,
          },
          ["name", "tokenTtlMs"],
        );
        this.deps.audit?.note(req, { cluster: String(b.name).slice(0, 63) });
        const info = await admin.addCluster(
          {
            name: b.name as string,
            ...(b.auth === undefined ? {} : { auth: b.auth as "impersonate" }),
            ...(b.labels === undefined ? {} : { labels: b.labels as Record<string, string> }),
            ...(b.allowedUsers === undefined ? {} : { allowedUsers: b.allowedUsers as string[] }),
            ...(b.allowedGroups === undefined ? {} : { allowedGroups: b.allowedGroups as string[] }),
          },
          b.tokenTtlMs as number,
        );
        return { status: 201, body: info };
      }
    } else if (parts.length === 2 && name !== undefined) {
      if (method === "DELETE") {
        const removed = await admin.removeCluster(name);
        this.deps.onClusterRemoved?.(name);
        return { status: 200, body: removed };
      }
    } else if (servicePath && name !== undefined) {
      const service = decodeSegment(parts[3]!);
      this.deps.audit?.note(req, { cluster: name.slice(0, 63), service: service.slice(0, 63) });
      if (method === "POST") {
        const b = fields(await readJson(req), { allowedUsers: isStrings, allowedGroups: isStrings }, []);
        const users = (b.allowedUsers as string[] | undefined) ?? [];
        const groups = (b.allowedGroups as string[] | undefined) ?? [];
        return { status: 200, body: await admin.allowService(name, service, users, groups) };
      }
      if (method === "DELETE") return { status: 200, body: await admin.removeService(name, service) };
    } else if (parts[2] === "join-tokens" && name !== undefined) {
      if (method === "POST") {
        const b = fields(await readJson(req), { ttlMs: isMs }, ["ttlMs"]);
        return { status: 201, body: await admin.newJoinToken(name, b.ttlMs as number) };
      }
    } else if (parts[2] === "user-tokens" && name !== undefined) {
      if (method === "POST") {
        const b = fields(await readJson(req), { user: isString, groups: isStrings, ttlMs: isMs }, [
          "user",
          "ttlMs",
        ]);
        this.deps.audit?.note(req, {
          subjectUser: (b.user as string).slice(0, 256),
          subjectGroups: ((b.groups as string[] | undefined) ?? []).map((g) => g.slice(0, 256)),
        });
        const issued = await admin.issueUserToken(
          name,
          b.user as string,
          (b.groups as string[] | undefined) ?? [],
          b.ttlMs as number,
        );
        return { status: 201, body: issued };
      }
    }
    return notFound(method, path);
  }

  private async tokens(
    req: IncomingMessage,
    route: "tokens" | "token-revocations",
    method: string,
    path: string,
  ): Promise<{ status: number; body: unknown }> {
    const { admin } = this.deps;
    if (route === "tokens" && method === "GET") {
      const query = new URL(req.url ?? "/", "https://admin.invalid").searchParams;
      const unknown = [...query.keys()].find((k) => k !== "user");
      if (unknown !== undefined) bad(`unknown query parameter ${JSON.stringify(unknown.slice(0, 40))}`);
      const user = query.getAll("user");
      if (user.length > 1) bad("give the user parameter at most once");
      return { status: 200, body: { tokens: await admin.listTokens(user[0]) } };
    }
    if (route === "token-revocations" && method === "POST") {
      const b = fields(await readJson(req), { id: isString, user: isString }, []);
      if ((b.id === undefined) === (b.user === undefined)) bad("give exactly one of the fields id and user");
      const selector: TokenSelector =
        b.id === undefined ? { user: b.user as string } : { id: b.id as string };
      if ("user" in selector) this.deps.audit?.note(req, { subjectUser: selector.user.slice(0, 256) });
      const revoked = await admin.revokeTokens(selector);
      this.deps.onTokensRevoked?.(revoked.map((t) => t.id));
      return { status: 200, body: { revoked } };
    }
    return notFound(method, path);
  }
}

function notFound(method: string, path: string): never {
  throw new TetherCliError(ERR_TETHER_ADMIN_NOT_FOUND, `no admin API route ${method} ${path.slice(0, 100)}`);
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return bad(`the path segment ${JSON.stringify(segment.slice(0, 100))} is not valid percent-encoding`);
  }
}

function codeOf(err: unknown): unknown {
  return (err as { code?: unknown } | undefined)?.code;
}

async function readJson(req: IncomingMessage): Promise<Body> {
  let text: string;
  try {
    text = await readBounded(req);
  } catch (err) {
    return bad((err as Error).message);
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return bad("the body must be a JSON object");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) bad("the body must be a JSON object");
  return body as Body;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store",
  });
  res.end(text);
}
