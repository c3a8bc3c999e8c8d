// `tether-server kubefed NAME`: the two objects KubeFed's `kubefedctl join`
// would create for a member, pointed at Tether instead of the member's own
// apiserver. A KubeFedCluster (core.kubefed.io/v1beta1) whose apiEndpoint is
// https://<server>/clusters/NAME and whose caBundle is Tether's CA, and the
// Secret it names, whose `token` key holds a Tether user token scoped to that
// cluster. The KubeFed controller builds its client from exactly these three
// values, so it works through the tunnel unchanged; the member sees the
// controller as tether:<user> and its RBAC decides what that may do.

import { Document } from "yaml";
import { DEFAULT_KUBEFED_TOKEN_TTL, MAX_USER_TOKEN_TTL_MS, parseTtl } from "../admin/admin-input.js";
import type { UserToken } from "../admin/cluster-admin.js";
import type { AdminContext } from "../cli/admin-commands.js";
import { memberUrl } from "../proxy/host-routing.js";

export const KUBEFED_NAMESPACE = "kube-federation-system";
export const DEFAULT_KUBEFED_USER = "kubefed";

export interface KubefedOptions {
  user?: string;
  groups?: string[];
  ttl?: string;
  namespace?: string;
  server?: string;
  output?: "yaml" | "json";
  /** apiEndpoint https://<name>.<domain>:<port> (host routing; needs DNS for the names). */
  clusterDomain?: string | undefined;
}

/** The KubeFedCluster and its token Secret for a user token of the cluster. */
export function kubefedObjects(
  issued: UserToken,
  namespace = KUBEFED_NAMESPACE,
  clusterDomain?: string,
): Record<string, unknown>[] {
  const secretName = `${issued.cluster}-tether-token`;
  const labels = { "app.kubernetes.io/managed-by": "tether-server", "tether.io/cluster": issued.cluster };
  return [
    {
      apiVersion: "v1",
      kind: "Secret",
      type: "Opaque",
      metadata: {
        name: secretName,
        namespace,
        labels,
        annotations: { "tether.io/expires-at": issued.expiresAt },
      },
      // `data`, as kubefedctl join writes it: what KubeFed reads back (Secret.Data["token"]).
      data: { token: Buffer.from(issued.token, "utf8").toString("base64") },
    },
    {
      apiVersion: "core.kubefed.io/v1beta1",
      kind: "KubeFedCluster",
      metadata: { name: issued.cluster, namespace, labels },
      spec: {
        apiEndpoint: memberUrl(issued.server, issued.cluster, clusterDomain),
        caBundle: Buffer.from(issued.caPem, "utf8").toString("base64"),
        secretRef: { name: secretName },
      },
    },
  ];
}

/** `kubefed NAME`: issues the token and prints the two objects (YAML documents, or a JSON List). */
export async function kubefed(
  ctx: AdminContext,
  name: string,
  opts: KubefedOptions = {},
): Promise<Record<string, unknown>[]> {
  const ttlMs = parseTtl("--ttl", opts.ttl ?? DEFAULT_KUBEFED_TOKEN_TTL, MAX_USER_TOKEN_TTL_MS);
  const admin = await ctx.admin(opts.server);
  const issued = await admin.issueUserToken(
    name,
    opts.user ?? DEFAULT_KUBEFED_USER,
    opts.groups ?? [],
    ttlMs,
  );
  const objects = kubefedObjects(issued, opts.namespace, opts.clusterDomain);
  if (opts.output === "json") {
    ctx.out(`${JSON.stringify({ apiVersion: "v1", kind: "List", items: objects }, null, 2)}\n`);
  } else {
    ctx.out(
      `# KubeFed member ${name} through Tether, as tether:${issued.user}; the token expires ${issued.expiresAt}:\n` +
        `# run "tether-server kubefed ${name}" again and re-apply before then.\n`,
    );
    ctx.out(objects.map((o) => new Document(o).toString()).join("---\n"));
  }
  return objects;
}
