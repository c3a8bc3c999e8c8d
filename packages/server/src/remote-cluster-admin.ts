// A ClusterAdmin that drives a running tether-server through its admin API
// (admin-api.ts), for `tether-server ... --credential FILE`. TLS trusts only
// the CA in the credential; the token goes only to that server. Errors come
// back with the server's code and message, or say what to check when the
// server can't be reached.
import { request } from "node:https";
import type { AdminCredential } from "./admin-credential.js";
import { TetherCliError } from "./admin-input.js";
import type { ClusterAdmin, ClusterSpec, JoinInfo, RemoveResult, UserToken } from "./cluster-admin.js";
import type { ClusterRecord } from "./state-store.js";

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

  async listClusters(): Promise<ClusterRecord[]> {
    return (await this.call<{ clusters: ClusterRecord[] }>("GET", "clusters")).clusters;
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

  private call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const url = new URL(`/admin/v1/${path}`, this.base);
    return new Promise<T>((resolve, reject) => {
      const req = request(
        url,
        {
          method,
          ca: this.credential.caCertificate,
          timeout: TIMEOUT_MS,
          headers: {
            authorization: `Bearer ${this.credential.token}`,
            accept: "application/json",
            ...(payload
              ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) }
              : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on("data", (chunk: Buffer) => {
            size += chunk.length;
            if (size > MAX_RESPONSE_BYTES) req.destroy(new Error("the answer is too large"));
            else chunks.push(chunk);
          });
          res.on("end", () => {
            let parsed: unknown;
            try {
              parsed = JSON.parse(Buffer.concat(chunks).toString("utf8"));
            } catch {
              parsed = undefined;
            }
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300 && parsed !== undefined) return resolve(parsed as T);
            const err = parsed as { code?: unknown; message?: unknown } | undefined;
            if (typeof err?.code === "string" && typeof err.message === "string") {
              return reject(new TetherCliError(err.code, err.message));
            }
            reject(
              new TetherCliError(
                ERR_TETHER_SERVER_UNREACHABLE,
                `${this.where} answered HTTP ${status} without an admin API error: is it tether-server, at this URL?`,
              ),
            );
          });
          res.on("error", (e) => reject(this.unreachable(e)));
        },
      );
      req.on("timeout", () => req.destroy(new Error(`no answer within ${TIMEOUT_MS / 1000}s`)));
      req.on("error", (e) => reject(this.unreachable(e)));
      req.end(payload);
    });
  }

  private unreachable(err: Error): TetherCliError {
    const code = (err as NodeJS.ErrnoException).code ?? "";
    const hint =
      code === "ECONNREFUSED"
        ? `; is "tether-server serve" running there?`
        : /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(code)
          ? "; the server's certificate is not from the CA in the credential: is the credential for this server?"
          : "; check --server and the network";
    return new TetherCliError(
      ERR_TETHER_SERVER_UNREACHABLE,
      `cannot reach tether-server at ${this.where}: ${err.message}${hint}`,
    );
  }
}
