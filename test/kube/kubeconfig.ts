// Kubeconfig files for harness identities: one cluster, one user, one context.
import { writeFile } from "node:fs/promises";
import { stringify as toYaml } from "yaml";

export interface KubeconfigSpec {
  name: string;
  server: string;
  caPem: string;
  /** A bearer token, or a client certificate and key, or neither (anonymous). */
  token?: string;
  certPem?: string;
  keyPem?: string;
  /** tls-server-name: the TLS server name to send and verify instead of the URL's host. */
  tlsServerName?: string;
}

export function kubeconfigYaml(spec: KubeconfigSpec): string {
  const b64 = (s: string) => Buffer.from(s).toString("base64");
  const user: Record<string, string> = {};
  if (spec.token) user.token = spec.token;
  if (spec.certPem && spec.keyPem) {
    user["client-certificate-data"] = b64(spec.certPem);
    user["client-key-data"] = b64(spec.keyPem);
  }
  return toYaml({
    apiVersion: "v1",
    kind: "Config",
    clusters: [
      {
        name: spec.name,
        cluster: {
          server: spec.server,
          "certificate-authority-data": b64(spec.caPem),
          ...(spec.tlsServerName ? { "tls-server-name": spec.tlsServerName } : {}),
        },
      },
    ],
    users: [{ name: spec.name, user }],
    contexts: [{ name: spec.name, context: { cluster: spec.name, user: spec.name } }],
    "current-context": spec.name,
  });
}

/** Writes a kubeconfig (mode 0600) and returns its path. */
export async function writeKubeconfig(path: string, spec: KubeconfigSpec): Promise<string> {
  await writeFile(path, kubeconfigYaml(spec), { mode: 0o600 });
  return path;
}
