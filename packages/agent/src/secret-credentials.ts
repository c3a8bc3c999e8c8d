// The agent's credentials kept in a Secret in its own namespace, for an agent
// running in a pod: a read-only root filesystem and a restarted pod must not
// lose the identity, and the join token works only once.
//
// The Secret is of type kubernetes.io/tls: `tls.key`, `tls.crt` and `ca.crt`
// (Tether's CA). It is written as one object, so a kill -9 leaves the old or
// the new pair, never a key that doesn't match its certificate. Updates carry
// the resourceVersion read last; a conflict re-reads and writes again. The
// requests go to the in-cluster apiserver with the pod's own service-account
// token (the same KubeTarget the forwarder uses), over node:https: three REST
// calls don't justify a Kubernetes client library in the agent.
import { request } from "node:https";
import type { CredentialStore, Credentials } from "./credentials.js";
import { CredentialsError } from "./credentials.js";
import type { KubeTarget } from "./kube-target.js";

const MAX_RESPONSE_BYTES = 1 << 20;
const REQUEST_TIMEOUT_MS = 15_000;
/** Writes that lose a race with another writer this often in a row give up. */
const MAX_WRITE_ATTEMPTS = 4;

export const ERR_SECRET_FORBIDDEN = "ERR_TETHER_AGENT_SECRET_FORBIDDEN";
export const ERR_SECRET_UNAUTHORIZED = "ERR_TETHER_AGENT_SECRET_UNAUTHORIZED";
export const ERR_SECRET_CONFLICT = "ERR_TETHER_AGENT_SECRET_CONFLICT";
export const ERR_SECRET_UNREACHABLE = "ERR_TETHER_AGENT_SECRET_UNREACHABLE";
export const ERR_SECRET_API = "ERR_TETHER_AGENT_SECRET_API";
export const ERR_STATE_CORRUPT = "ERR_TETHER_AGENT_STATE_CORRUPT";

type Verb = "get" | "create" | "update";

interface SecretObject {
  apiVersion: "v1";
  kind: "Secret";
  type?: string;
  metadata: { name: string; namespace: string; resourceVersion?: string; labels?: Record<string, string> };
  data?: Record<string, string>;
}

interface ApiResponse {
  status: number;
  body: unknown;
}

/** Stands in for the credentials in a dry-run write, which checks permissions and stores nothing. */
const PROBE: Credentials = { caPem: "", certPem: "", keyPem: "" };

export class SecretCredentials implements CredentialStore {
  readonly where: string;
  private resourceVersion: string | undefined;

  constructor(
    private readonly target: KubeTarget,
    readonly namespace: string,
    readonly name: string,
  ) {
    this.where = `Secret ${namespace}/${name}`;
  }

  async load(): Promise<Credentials | undefined> {
    const secret = await this.read();
    if (!secret) return undefined;
    const data = secret.data ?? {};
    const decode = (key: string) =>
      typeof data[key] === "string" ? Buffer.from(data[key], "base64").toString("utf8") : undefined;
    const caPem = decode("ca.crt");
    const certPem = decode("tls.crt");
    const keyPem = decode("tls.key");
    if (!caPem || !certPem || !keyPem) {
      throw new CredentialsError(
        ERR_STATE_CORRUPT,
        `${this.where} lacks ca.crt, tls.crt or tls.key; start the agent with a new join token to replace it`,
      );
    }
    return { caPem, certPem, keyPem };
  }

  /** A server-side dry-run of the write save() will do: fails with the missing RBAC rule, stores nothing. */
  async checkWritable(): Promise<void> {
    await this.write(PROBE, true);
  }

  async save(creds: Credentials): Promise<void> {
    await this.write(creds, false);
  }

  /** GETs the Secret and remembers its resourceVersion; undefined if there is none. */
  private async read(): Promise<SecretObject | undefined> {
    const res = await this.call("GET", this.itemPath(), undefined, "get");
    if (res.status === 404) {
      this.resourceVersion = undefined;
      return undefined;
    }
    const secret = res.body as Partial<SecretObject> | undefined;
    if (res.status >= 300 || typeof secret?.metadata?.resourceVersion !== "string") {
      throw new CredentialsError(
        ERR_SECRET_API,
        `GET ${this.where} answered HTTP ${res.status} without a Secret; is ${this.target.url.host} a Kubernetes apiserver?`,
      );
    }
    this.resourceVersion = secret.metadata.resourceVersion;
    return secret as SecretObject;
  }

  /**
   * Creates the Secret, or replaces it at the resourceVersion read last. When
   * someone else wrote it in between (409) or deleted it (404), re-reads and
   * tries again.
   */
  private async write(creds: Credentials, dryRun: boolean): Promise<void> {
    const query = dryRun ? "?dryRun=All" : "";
    for (let attempt = 1; ; attempt++) {
      const body = this.secretFor(creds);
      const res =
        this.resourceVersion === undefined
          ? await this.call("POST", this.collectionPath() + query, body, "create")
          : await this.call("PUT", this.itemPath() + query, body, "update");
      if (res.status < 300) {
        if (!dryRun) this.resourceVersion = (res.body as SecretObject | undefined)?.metadata?.resourceVersion;
        return;
      }
      if (res.status === 404 && this.resourceVersion === undefined) {
        throw new CredentialsError(
          ERR_SECRET_API,
          `cannot create ${this.where}: namespace ${this.namespace} does not exist`,
        );
      }
      if (attempt >= MAX_WRITE_ATTEMPTS) {
        throw new CredentialsError(
          ERR_SECRET_CONFLICT,
          `${this.where} kept changing while the agent wrote it; is another agent using the same Secret?`,
        );
      }
      await this.read();
    }
  }

  private secretFor(creds: Credentials): SecretObject {
    const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64");
    return {
      apiVersion: "v1",
      kind: "Secret",
      type: "kubernetes.io/tls",
      metadata: {
        name: this.name,
        namespace: this.namespace,
        labels: { "app.kubernetes.io/name": "tether-agent", "app.kubernetes.io/component": "credentials" },
        ...(this.resourceVersion === undefined ? {} : { resourceVersion: this.resourceVersion }),
      },
      data: { "ca.crt": b64(creds.caPem), "tls.crt": b64(creds.certPem), "tls.key": b64(creds.keyPem) },
    };
  }

  private collectionPath(): string {
    return `/api/v1/namespaces/${encodeURIComponent(this.namespace)}/secrets`;
  }

  private itemPath(): string {
    return `${this.collectionPath()}/${encodeURIComponent(this.name)}`;
  }

  /** One request; 2xx, 404 and 409 come back, everything else is a coded error that says what to do. */
  private async call(method: string, path: string, body: unknown, verb: Verb): Promise<ApiResponse> {
    let res: ApiResponse;
    try {
      res = await this.send(method, path, body);
    } catch (err) {
      throw new CredentialsError(
        ERR_SECRET_UNREACHABLE,
        `cannot ${verb} ${this.where} at ${this.target.url.host}: ${(err as Error).message}`,
      );
    }
    if (res.status < 300 || res.status === 404 || res.status === 409) return res;
    if (res.status === 401) {
      throw new CredentialsError(
        ERR_SECRET_UNAUTHORIZED,
        `the apiserver at ${this.target.url.host} did not accept the pod's service-account token (HTTP 401) ` +
          `to ${verb} ${this.where}; check the token mounted for the agent`,
      );
    }
    if (res.status === 403) throw this.forbidden(verb);
    const message = (res.body as { message?: unknown } | undefined)?.message;
    throw new CredentialsError(
      ERR_SECRET_API,
      `cannot ${verb} ${this.where}: HTTP ${res.status}` +
        (typeof message === "string" ? `: ${message.replace(/\s+/g, " ").slice(0, 300)}` : ""),
    );
  }

  /**
   * The RBAC rule that allows `verb`, as the agent's Role must hold it. get and
   * update can be limited to this Secret's name; create cannot (the name is
   * not known when create is authorized), so it needs a rule of its own.
   */
  private forbidden(verb: Verb): CredentialsError {
    const rule =
      verb === "create"
        ? `{apiGroups: [""], resources: ["secrets"], verbs: ["create"]} (no resourceNames: RBAC cannot limit create by name)`
        : `{apiGroups: [""], resources: ["secrets"], resourceNames: ["${this.name}"], verbs: ["get", "update"]}`;
    const who = serviceAccountOf(this.target.authorization()) ?? "the agent's service account";
    return new CredentialsError(
      ERR_SECRET_FORBIDDEN,
      `${who} may not ${verb} ${this.where}: bind it to a Role in namespace ${this.namespace} with the rule ` +
        `${rule} (tether-server agent-manifest prints that Role)`,
    );
  }

  private send(method: string, path: string, body: unknown): Promise<ApiResponse> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const authorization = this.target.authorization();
    return new Promise((resolve, reject) => {
      const req = request(
        {
          protocol: "https:",
          hostname: this.target.url.hostname.replace(/^\[|\]$/g, ""),
          port: this.target.url.port || 443,
          method,
          path,
          ...this.target.tls,
          timeout: REQUEST_TIMEOUT_MS,
          headers: {
            accept: "application/json",
            ...(authorization ? { authorization } : {}),
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
            if (size > MAX_RESPONSE_BYTES) {
              req.destroy(new Error(`response larger than ${MAX_RESPONSE_BYTES} bytes`));
              return;
            }
            chunks.push(chunk);
          });
          res.on("error", reject);
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            let parsed: unknown;
            try {
              parsed = text ? JSON.parse(text) : undefined;
            } catch {
              parsed = undefined;
            }
            resolve({ status: res.statusCode ?? 0, body: parsed });
          });
        },
      );
      req.on("timeout", () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS / 1000}s`)));
      req.on("error", reject);
      req.end(payload);
    });
  }
}

/**
 * "service account ns/name" from a service-account token's `sub` claim, to
 * name the RoleBinding's subject in an error. Only the claim is read; the
 * token itself never goes into a message.
 */
function serviceAccountOf(authorization: string | undefined): string | undefined {
  const payload = /^Bearer [^.\s]+\.([^.\s]+)\./.exec(authorization ?? "")?.[1];
  if (!payload) return undefined;
  try {
    const sub = (JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as { sub?: unknown }).sub;
    const m = typeof sub === "string" ? /^system:serviceaccount:([^:]+):([^:]+)$/.exec(sub) : null;
    return m ? `service account ${m[1]}/${m[2]}` : undefined;
  } catch {
    return undefined;
  }
}
