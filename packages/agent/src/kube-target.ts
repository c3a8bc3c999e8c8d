// The apiserver this agent forwards to: the in-cluster one (service host and
// port from the environment, the pod's service-account CA and token files) or
// one from a kubeconfig. The token file is re-read when it changes, because
// projected service-account tokens rotate; it never leaves this cluster.
import { readFileSync, statSync } from "node:fs";
import { dirname, isAbsolute, resolve } from "node:path";
import { TetherError } from "@tether/common";
import { parse as parseYaml } from "yaml";

export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

export interface KubeTarget {
  /** https://host:port of the apiserver. */
  readonly url: URL;
  /** TLS options for connections to the apiserver. */
  readonly tls: { ca?: string; cert?: string; key?: string; servername?: string };
  /** The agent's own `Authorization` header value, if it authenticates with a token. */
  authorization(): string | undefined;
  /** Human description for logs. */
  readonly description: string;
}

/**
 * The part of a target's TLS options that checks the apiserver, without the
 * agent's client certificate: what passthrough connections use, so that a
 * caller's request can never run as the agent (the apiserver authenticates a
 * client certificate before it looks at the caller's bearer token).
 */
export function serverVerification(tls: KubeTarget["tls"]): { ca?: string; servername?: string } {
  return {
    ...(tls.ca !== undefined ? { ca: tls.ca } : {}),
    ...(tls.servername !== undefined ? { servername: tls.servername } : {}),
  };
}

export class TargetConfigError extends TetherError {
  override name = "TargetConfigError";
  constructor(message: string) {
    super("ERR_TETHER_KUBE_TARGET", message);
  }
}

/** A token file re-read whenever its mtime or size changes (checked at most once a second). */
export class TokenFile {
  private token: string | undefined;
  private stamp = "";
  private checkedAt = 0;

  constructor(readonly path: string) {
    this.read();
    if (!this.token) throw new TargetConfigError(`token file ${path} is empty`);
  }

  private read(): void {
    const st = statSync(this.path);
    const stamp = `${st.mtimeMs}:${st.size}:${st.ino}`;
    if (stamp !== this.stamp) {
      const value = readFileSync(this.path, "utf8").trim();
      if (value) this.token = value;
      this.stamp = stamp;
    }
  }

  current(): string | undefined {
    const now = Date.now();
    if (now - this.checkedAt >= 1000) {
      this.checkedAt = now;
      try {
        this.read();
      } catch {
        // Mid-rotation the file can briefly vanish: keep the last good token.
      }
    }
    return this.token;
  }
}

function readRequired(path: string, what: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw new TargetConfigError(`cannot read ${what} at ${path}: ${(err as Error).message}`);
  }
}

/** The in-cluster apiserver, as a pod sees it. `env` and `saDir` are parameters so tests can use real files elsewhere. */
export function inClusterTarget(
  env: NodeJS.ProcessEnv = process.env,
  saDir = SERVICE_ACCOUNT_DIR,
): KubeTarget {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) {
    throw new TargetConfigError(
      "not running in a Kubernetes pod (KUBERNETES_SERVICE_HOST/PORT unset): pass --kubeconfig to name the apiserver",
    );
  }
  const url = new URL(`https://${host.includes(":") ? `[${host}]` : host}:${port}`);
  const ca = readRequired(`${saDir}/ca.crt`, "the service-account CA");
  const token = new TokenFile(`${saDir}/token`);
  return {
    url,
    tls: { ca },
    authorization: () => `Bearer ${token.current()}`,
    description: `in-cluster apiserver ${url.host}`,
  };
}

interface KubeconfigDoc {
  "current-context"?: string;
  contexts?: { name: string; context: { cluster: string; user?: string } }[];
  clusters?: {
    name: string;
    cluster: {
      server: string;
      "certificate-authority"?: string;
      "certificate-authority-data"?: string;
      "tls-server-name"?: string;
    };
  }[];
  users?: {
    name: string;
    user: {
      token?: string;
      tokenFile?: string;
      "client-certificate"?: string;
      "client-certificate-data"?: string;
      "client-key"?: string;
      "client-key-data"?: string;
    };
  }[];
}

/** The apiserver of a kubeconfig's current (or named) context. */
export function kubeconfigTarget(path: string, contextName?: string): KubeTarget {
  const doc = parseYaml(readRequired(path, "the kubeconfig")) as KubeconfigDoc;
  const base = dirname(resolve(path));
  const file = (p: string) =>
    readRequired(isAbsolute(p) ? p : resolve(base, p), "a file named by the kubeconfig");
  const b64 = (s: string) => Buffer.from(s, "base64").toString("utf8");
  const name = contextName ?? doc["current-context"];
  const context = doc.contexts?.find((c) => c.name === name)?.context;
  if (!context) throw new TargetConfigError(`kubeconfig ${path} has no context "${name}"`);
  const cluster = doc.clusters?.find((c) => c.name === context.cluster)?.cluster;
  if (!cluster?.server)
    throw new TargetConfigError(`kubeconfig ${path}: cluster "${context.cluster}" has no server`);
  const user = doc.users?.find((u) => u.name === context.user)?.user ?? {};
  const url = new URL(cluster.server);
  if (url.protocol !== "https:")
    throw new TargetConfigError(`kubeconfig ${path}: the apiserver must be https`);
  const tls: KubeTarget["tls"] = {};
  if (cluster["certificate-authority-data"]) tls.ca = b64(cluster["certificate-authority-data"]);
  else if (cluster["certificate-authority"]) tls.ca = file(cluster["certificate-authority"]);
  if (cluster["tls-server-name"]) tls.servername = cluster["tls-server-name"];
  if (user["client-certificate-data"]) tls.cert = b64(user["client-certificate-data"]);
  else if (user["client-certificate"]) tls.cert = file(user["client-certificate"]);
  if (user["client-key-data"]) tls.key = b64(user["client-key-data"]);
  else if (user["client-key"]) tls.key = file(user["client-key"]);
  const tokenFile = user.tokenFile
    ? new TokenFile(isAbsolute(user.tokenFile) ? user.tokenFile : resolve(base, user.tokenFile))
    : undefined;
  const token = user.token;
  return {
    url,
    tls,
    authorization: () => {
      const t = tokenFile?.current() ?? token;
      return t ? `Bearer ${t}` : undefined;
    },
    description: `apiserver ${url.host} from ${path}`,
  };
}
