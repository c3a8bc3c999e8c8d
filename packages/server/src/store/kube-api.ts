// JSON requests to the host cluster's apiserver, for the Kubernetes-backed
// store. @kubernetes/client-node loads the kubeconfig (or the in-cluster
// service account) and applies its credentials; the requests themselves are
// plain HTTPS, so that resourceVersion preconditions, merge patches and 404 /
// 409 answers are explicit where the store relies on them.
import type { RequestOptions } from "node:https";
import { KubeConfig } from "@kubernetes/client-node";
import { type JsonAnswer, requestJson, TetherError } from "@tether/common";

const MAX_RESPONSE_BYTES = 64 << 20;
const TIMEOUT_MS = 30_000;

export interface KubeConnection {
  /** A kubeconfig file; neither this nor TETHER_KUBECONFIG/KUBECONFIG means in-cluster. */
  kubeconfig?: string;
  context?: string;
}

export type ApiAnswer<T = unknown> = JsonAnswer<T>;

/** A coded error about the host cluster; `status` is the apiserver's answer, when there was one. */
export class KubeApiError extends TetherError {
  constructor(
    code: string,
    message: string,
    readonly status?: number,
  ) {
    super(code, message);
    this.name = "KubeApiError";
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
    const options: RequestOptions & { timeout: number } = { method, timeout: TIMEOUT_MS };
    await this.kubeConfig.applyToHTTPSOptions(options);
    const url = new URL(this.server.pathname.replace(/\/$/, "") + path, this.server);
    try {
      return await requestJson<T>(url, options, body, MAX_RESPONSE_BYTES, contentType);
    } catch (err) {
      throw new KubeApiError(
        "ERR_TETHER_KUBE_UNREACHABLE",
        `cannot reach the host cluster's apiserver ${this.server.host}: ${(err as Error).message}`,
      );
    }
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
}
