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
    const res = await this.call("GET", this.itemPath(), undefined, "get");
    if (res.status === 404) {
      this.resourceVersion = undefined;
      return undefined;
    }
    const secret = res.body as SecretObject;
    this.resourceVersion = secret.metadata?.resourceVersion;
    const data = secret.data ?? {};
    const decode = (key: string) =>
      typeof data[key] === "string" ? Buffer.from(data[key], "base64").toString("utf8") : undefined;
    const caPem = decode("ca.crt");
    const certPem = decode("tls.crt");
    const keyPem = decode("tls.key");
    if (!caPem || !certPem || !keyPem) {
      throw new CredentialsError(
        "ERR_TETHER_AGENT_STATE_CORRUPT",
        `${this.where} lacks ca.crt, tls.crt or tls.key; delete it and join again with a new token`,
      );
    }
    return { caPem, certPem, keyPem };
  }

  async save(creds: Credentials): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const body = this.secretFor(creds);
      const res =
        this.resourceVersion === undefined
          ? await this.call("POST", this.collectionPath(), body, "create")
          : await this.call("PUT", this.itemPath(), body, "update");
      if (res.status < 300) {
        this.resourceVersion = (res.body as SecretObject).metadata?.resourceVersion;
        return;
      }
      // 409: someone else wrote it (another replica, an operator) or it already exists: re-read and retry.
      if (attempt >= 3) {
        throw new CredentialsError(
          "ERR_TETHER_AGENT_SECRET_CONFLICT",
          `${this.where} kept changing while the agent wrote it; is another agent with the same Secret running?`,
        );
      }
      await this.load().catch(() => {
        this.resourceVersion = undefined;
      });
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
  private async call(method: string, path: string, body: unknown, verb: string): Promise<ApiResponse> {
    let res: ApiResponse;
    try {
      res = await this.send(method, path, body);
    } catch (err) {
      throw new CredentialsError(
        "ERR_TETHER_AGENT_SECRET_UNREACHABLE",
        `cannot ${verb} ${this.where} at ${this.target.url.host}: ${(err as Error).message}`,
      );
    }
    if (res.status < 300 || res.status === 404 || res.status === 409) return res;
    if (res.status === 401 || res.status === 403) {
      throw new CredentialsError(
        "ERR_TETHER_AGENT_SECRET_FORBIDDEN",
        `the agent may not ${verb} ${this.where} (HTTP ${res.status}): its service account needs a Role in ` +
          `namespace ${this.namespace} allowing get, create and update on secrets (see deploy/agent)`,
      );
    }
    const message = (res.body as { message?: unknown } | undefined)?.message;
    throw new CredentialsError(
      "ERR_TETHER_AGENT_SECRET_API",
      `cannot ${verb} ${this.where}: HTTP ${res.status}${typeof message === "string" ? `: ${message}` : ""}`,
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
