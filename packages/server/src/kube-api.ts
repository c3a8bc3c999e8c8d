// JSON requests to the host cluster's apiserver, for the Kubernetes-backed
// store. @kubernetes/client-node loads the kubeconfig (or the in-cluster
// service account) and applies its credentials; the requests themselves are
// plain HTTPS, so that resourceVersion preconditions, merge patches and 404 /
// 409 answers are explicit where the store relies on them.
import { request } from "node:https";
import { KubeConfig } from "@kubernetes/client-node";

const MAX_RESPONSE_BYTES = 64 << 20;
const TIMEOUT_MS = 30_000;

export interface KubeConnection {
  /** A kubeconfig file; neither this nor TETHER_KUBECONFIG/KUBECONFIG means in-cluster. */
  kubeconfig?: string;
  context?: string;
}

export interface ApiAnswer<T = unknown> {
  status: number;
  body: T;
}

export class KubeApiError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

export class KubeApi {
  readonly kubeConfig: KubeConfig;
  readonly server: URL;

  constructor(connection: KubeConnection) {
    const kc = new KubeConfig();
    try {
      if (connection.kubeconfig) kc.loadFromFile(connection.kubeconfig);
      else kc.loadFromCluster();
      if (connection.context) kc.setCurrentContext(connection.context);
    } catch (err) {
      throw new KubeApiError(
        "ERR_TETHER_KUBE_CONFIG",
        `cannot load ${connection.kubeconfig ? `kubeconfig ${connection.kubeconfig}` : "the in-cluster configuration"}` +
          `: ${(err as Error).message}; pass --kubeconfig (and --context) for the host cluster`,
      );
    }
    const cluster = kc.getCurrentCluster();
    if (!cluster?.server) {
      throw new KubeApiError(
        "ERR_TETHER_KUBE_CONFIG",
        connection.kubeconfig
          ? `kubeconfig ${connection.kubeconfig} has no server for its current context; pass --context`
          : "not in a pod (no in-cluster configuration): pass --kubeconfig for the host cluster",
      );
    }
    this.kubeConfig = kc;
    this.server = new URL(cluster.server);
  }

  /** One request; every answer comes back, transport failures throw ERR_TETHER_KUBE_UNREACHABLE. */
  async call<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    contentType = "application/json",
  ): Promise<ApiAnswer<T>> {
    const options: import("node:https").RequestOptions = {
      method,
      timeout: TIMEOUT_MS,
      headers: { accept: "application/json" },
    };
    await this.kubeConfig.applyToHTTPSOptions(options);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    if (payload !== undefined) {
      options.headers = {
        ...options.headers,
        "content-type": contentType,
        "content-length": Buffer.byteLength(payload),
      };
    }
    const url = new URL(this.server.pathname.replace(/\/$/, "") + path, this.server);
    return new Promise((resolve, reject) => {
      const req = request(url, options, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES)
            req.destroy(new Error(`answer larger than ${MAX_RESPONSE_BYTES} bytes`));
          else chunks.push(chunk);
        });
        res.on("error", (err) => reject(this.unreachable(err)));
        res.on("end", () => {
          let parsed: unknown;
          try {
            parsed = JSON.parse(Buffer.concat(chunks).toString("utf8"));
          } catch {
            parsed = undefined;
          }
          resolve({ status: res.statusCode ?? 0, body: parsed as T });
        });
      });
      req.on("timeout", () => req.destroy(new Error(`no answer within ${TIMEOUT_MS / 1000}s`)));
      req.on("error", (err) => reject(this.unreachable(err)));
      req.end(payload);
    });
  }

  /** `call`, throwing a coded error unless the status is 2xx or listed in `allow`. */
  async expect<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    allow: number[] = [],
    contentType?: string,
  ): Promise<ApiAnswer<T>> {
    const answer = await this.call<T>(method, path, body, contentType);
    if ((answer.status >= 200 && answer.status < 300) || allow.includes(answer.status)) return answer;
    throw this.refused(method, path, answer);
  }

  refused(method: string, path: string, answer: ApiAnswer): KubeApiError {
    const message = (answer.body as { message?: unknown } | undefined)?.message;
    const detail = typeof message === "string" ? `: ${message}` : "";
    if (answer.status === 401 || answer.status === 403) {
      return new KubeApiError(
        "ERR_TETHER_KUBE_FORBIDDEN",
        `the host cluster refused ${method} ${path} (HTTP ${answer.status})${detail}; ` +
          "grant tether-server's identity the RBAC in deploy/server (ClusterRole on clusters.tether.io, Role on secrets and configmaps)",
        answer.status,
      );
    }
    if (answer.status === 404 && path.startsWith("/apis/tether.io/")) {
      return new KubeApiError(
        "ERR_TETHER_KUBE_NO_CRD",
        `the host cluster has no clusters.tether.io CRD: kubectl apply -k deploy/crd`,
        404,
      );
    }
    return new KubeApiError(
      "ERR_TETHER_KUBE_API",
      `${method} ${path} failed with HTTP ${answer.status}${detail}`,
      answer.status,
    );
  }

  private unreachable(err: Error): KubeApiError {
    return new KubeApiError(
      "ERR_TETHER_KUBE_UNREACHABLE",
      `cannot reach the host cluster's apiserver ${this.server.host}: ${err.message}`,
    );
  }
}
