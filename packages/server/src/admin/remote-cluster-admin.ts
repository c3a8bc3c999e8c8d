// A ClusterAdmin that drives a running tether-server through its admin API
// (admin-api.ts), for `tether-server ... --credential FILE`. TLS trusts only
// the CA in the credential; the token goes only to that server. Errors come
// back with the server's code and message, or say what to check when the
// server can't be reached.

import { type JsonAnswer, requestJson } from "@tether/common";
import type { AdminCredential } from "./admin-credential.js";
import { checkServiceName, fail, TetherCliError } from "./admin-input.js";
import type {
  ClusterAdmin,
  ClusterSpec,
  JoinInfo,
  ListedCluster,
  MemberEndpoint,
  RemoveResult,
  ServiceGrant,
  UserToken,
} from "./cluster-admin.js";
import type { TokenInfo, TokenSelector } from "./token-admin.js";

export const ERR_TETHER_SERVER_UNREACHABLE = "ERR_TETHER_SERVER_UNREACHABLE";
const MAX_RESPONSE_BYTES = 16 << 20;
const TIMEOUT_MS = 30_000;

export class RemoteClusterAdmin implements ClusterAdmin {
  readonly where: string;
  private readonly base: URL;

  /** `server` overrides the URL in the credential (e.g. another address of the same server). */
  constructor(
    private readonly credential: AdminCredential,
    server = credential.server,
  ) {
    this.base = new URL(server);
    this.where = server;
  }

  addCluster(spec: ClusterSpec, joinTokenTtlMs: number): Promise<JoinInfo> {
    return this.call("POST", "clusters", { ...spec, tokenTtlMs: joinTokenTtlMs });
  }

  async listClusters(): Promise<ListedCluster[]> {
    return (await this.call<{ clusters: ListedCluster[] }>("GET", "clusters")).clusters;
  }

  removeCluster(name: string): Promise<RemoveResult> {
    return this.call("DELETE", `clusters/${encodeURIComponent(name)}`);
  }

  newJoinToken(name: string, ttlMs: number): Promise<JoinInfo> {
    return this.call("POST", `clusters/${encodeURIComponent(name)}/join-tokens`, { ttlMs });
  }

  issueUserToken(name: string, user: string, groups: string[], ttlMs: number): Promise<UserToken> {
    return this.call("POST", `clusters/${encodeURIComponent(name)}/user-tokens`, { user, groups, ttlMs });
  }

  allowService(name: string, service: string, users: string[], groups: string[]): Promise<ServiceGrant> {
    return this.call("POST", this.servicePath(name, service), { allowedUsers: users, allowedGroups: groups });
  }

  removeService(
    name: string,
    service: string,
  ): Promise<{ cluster: string; service: string; removed: boolean }> {
    return this.call("DELETE", this.servicePath(name, service));
  }

  /** Checked here too: a URL would resolve a name like ".." before the server saw it. */
  private servicePath(name: string, service: string): string {
    checkServiceName(service);
    return `clusters/${encodeURIComponent(name)}/services/${encodeURIComponent(service)}`;
  }

  async memberEndpoint(name: string): Promise<MemberEndpoint> {
    const found = (await this.listClusters()).find((c) => c.name === name);
    if (!found) return fail("ERR_TETHER_UNKNOWN_CLUSTER", `no cluster named ${name} on ${this.where}`);
    const { allowedUsers, allowedGroups } = found;
    return {
      cluster: name,
      server: this.where,
      caPem: this.credential.caCertificate,
      allowedUsers,
      allowedGroups,
    };
  }

  async listTokens(user?: string): Promise<TokenInfo[]> {
    const query = user === undefined ? "" : `?user=${encodeURIComponent(user)}`;
    return (await this.call<{ tokens: TokenInfo[] }>("GET", `tokens${query}`)).tokens;
  }

  async revokeTokens(selector: TokenSelector): Promise<TokenInfo[]> {
    return (await this.call<{ revoked: TokenInfo[] }>("POST", "token-revocations", selector)).revoked;
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    let answer: JsonAnswer;
    try {
      answer = await requestJson(
        new URL(`/admin/v1/${path}`, this.base),
        {
          method,
          ca: this.credential.caCertificate,
          timeout: TIMEOUT_MS,
          headers: { authorization: `Bearer ${this.credential.token}` },
        },
        body,
        MAX_RESPONSE_BYTES,
      );
    } catch (err) {
      throw this.unreachable(err as Error);
    }
    if (answer.status >= 200 && answer.status < 300 && answer.body !== undefined) return answer.body as T;
    const err = answer.body as { code?: unknown; message?: unknown } | undefined;
    if (typeof err?.code === "string" && typeof err.message === "string") {
      throw new TetherCliError(err.code, err.message);
    }
    throw new TetherCliError(
      ERR_TETHER_SERVER_UNREACHABLE,
      `${this.where} answered HTTP ${answer.status} without an admin API error: is it tether-server, at this URL?`,
    );
  }

  private unreachable(err: Error): TetherCliError {
    const code = (err as NodeJS.ErrnoException).code ?? "";
    const hint =
      code === "ECONNREFUSED"
        ? `; is "tether-server serve" running there?`
        : code === "ERR_TLS_CERT_ALTNAME_INVALID"
          ? `; use the address in the credential, or start serve with --external-url naming ${this.base.hostname}`
          : /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(code)
            ? "; the server's certificate is not from the CA in the credential: is the credential for this server?"
            : "; check --server and the network";
    return new TetherCliError(
      ERR_TETHER_SERVER_UNREACHABLE,
      `cannot reach tether-server at ${this.where}: ${err.message}${hint}`,
    );
  }
}
