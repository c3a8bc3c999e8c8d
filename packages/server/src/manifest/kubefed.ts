// `tether-server kubefed NAME`: the two objects KubeFed's `kubefedctl join`
// would create for a member, pointed at Tether instead of the member's own
// apiserver. A KubeFedCluster (core.kubefed.io/v1beta1) whose apiEndpoint is
// https://<server>/clusters/NAME and whose caBundle is Tether's CA, and the
// Secret it names, whose `token` key holds a Tether user token scoped to that
// cluster. The KubeFed controller builds its client from exactly these three
// values, so it works through the tunnel unchanged; the member sees the
// controller as tether:<user> and its RBAC decides what that may do.
//
// --auth service-account needs no Tether token: the Secret is a
// kubernetes.io/service-account-token Secret of the controller's own service
// account, which the host's token controller fills and Tether (serve
// --host-service-accounts) verifies by TokenReview. The member then sees
// tether:system:serviceaccount:<ns>:<sa>, and the cluster must allow that user.

import { Document } from "yaml";
import { DEFAULT_KUBEFED_TOKEN_TTL, MAX_USER_TOKEN_TTL_MS, parseTtl } from "../admin/admin-input.js";
import type { ClusterAdmin, MemberEndpoint, UserToken } from "../admin/cluster-admin.js";
import type { AdminContext } from "../cli/admin-commands.js";
import { memberUrl } from "../proxy/host-routing.js";

export const KUBEFED_NAMESPACE = "kube-federation-system";
export const DEFAULT_KUBEFED_USER = "kubefed";
/** The service account kubefed's chart runs its controller manager as. */
export const DEFAULT_KUBEFED_SERVICE_ACCOUNT = "kubefed-controller";

export interface KubefedOptions {
  user?: string;
  groups?: string[];
  ttl?: string;
  namespace?: string;
  server?: string;
  output?: "yaml" | "json";
  /** apiEndpoint https://<name>.<domain>:<port> (host routing; needs DNS for the names). */
  clusterDomain?: string | undefined;
  /** tether-token (default): a copied Tether user token; service-account: the controller's own identity. */
  auth?: "tether-token" | "service-account";
  /** --auth service-account: the controller's service account, in `namespace`. */
  serviceAccount?: string;
}

/** The KubeFedCluster and a service-account token Secret of the controller's own service account. */
export function kubefedServiceAccountObjects(
  endpoint: MemberEndpoint,
  namespace = KUBEFED_NAMESPACE,
  serviceAccount = DEFAULT_KUBEFED_SERVICE_ACCOUNT,
  clusterDomain?: string,
): Record<string, unknown>[] {
  const secretName = `${endpoint.cluster}-tether-sa-token`;
  const labels = { "app.kubernetes.io/managed-by": "tether-server", "tether.io/cluster": endpoint.cluster };
  return [
    {
      apiVersion: "v1",
      kind: "Secret",
      type: "kubernetes.io/service-account-token",
      metadata: {
        name: secretName,
        namespace,
        labels,
        annotations: { "kubernetes.io/service-account.name": serviceAccount },
      },
    },
    kubefedCluster(
      endpoint.cluster,
      namespace,
      labels,
      endpoint.server,
      endpoint.caPem,
      secretName,
      clusterDomain,
    ),
  ];
}

function kubefedCluster(
  cluster: string,
  namespace: string,
  labels: Record<string, string>,
  server: string,
  caPem: string,
  secretName: string,
  clusterDomain?: string,
): Record<string, unknown> {
  return {
    apiVersion: "core.kubefed.io/v1beta1",
    kind: "KubeFedCluster",
    metadata: { name: cluster, namespace, labels },
    spec: {
      apiEndpoint: memberUrl(server, cluster, clusterDomain),
      caBundle: Buffer.from(caPem, "utf8").toString("base64"),
      secretRef: { name: secretName },
    },
  };
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
    kubefedCluster(issued.cluster, namespace, labels, issued.server, issued.caPem, secretName, clusterDomain),
  ];
}

/** `kubefed NAME`: issues the token and prints the two objects (YAML documents, or a JSON List). */
export async function kubefed(
  ctx: AdminContext,
  name: string,
  opts: KubefedOptions = {},
): Promise<Record<string, unknown>[]> {
  const admin = await ctx.admin(opts.server);
  if (opts.auth === "service-account") return kubefedAsServiceAccount(ctx, admin, name, opts);
  const ttlMs = parseTtl("--ttl", opts.ttl ?? DEFAULT_KUBEFED_TOKEN_TTL, MAX_USER_TOKEN_TTL_MS);
  const issued = await admin.issueUserToken(
    name,
    opts.user ?? DEFAULT_KUBEFED_USER,
    opts.groups ?? [],
    ttlMs,
  );
  const objects = kubefedObjects(issued, opts.namespace, opts.clusterDomain);
  print(
    ctx,
    objects,
    opts.output,
    `# KubeFed member ${name} through Tether, as tether:${issued.user}; the token expires ${issued.expiresAt}:\n` +
      `# run "tether-server kubefed ${name}" again and re-apply before then.\n`,
  );
  return objects;
}

async function kubefedAsServiceAccount(
  ctx: AdminContext,
  admin: ClusterAdmin,
  name: string,
  opts: KubefedOptions,
): Promise<Record<string, unknown>[]> {
  const namespace = opts.namespace ?? KUBEFED_NAMESPACE;
  const sa = opts.serviceAccount ?? DEFAULT_KUBEFED_SERVICE_ACCOUNT;
  const endpoint = await admin.memberEndpoint(name);
  const objects = kubefedServiceAccountObjects(endpoint, namespace, sa, opts.clusterDomain);
  const user = `system:serviceaccount:${namespace}:${sa}`;
  const allowed =
    endpoint.allowedUsers.includes(user) ||
    endpoint.allowedGroups.some(
      (g) => g === "system:serviceaccounts" || g === `system:serviceaccounts:${namespace}`,
    );
  print(
    ctx,
    objects,
    opts.output,
    `# KubeFed member ${name} through Tether, as KubeFed's own service account: tether:${user} on the member.\n` +
      "# The host's token controller fills the Secret; tether-server must run with --host-service-accounts.\n" +
      (allowed ? "" : `# Cluster ${name} does not allow ${user} yet: until it does, Tether answers 403.\n`),
  );
  return objects;
}

function print(
  ctx: AdminContext,
  objects: Record<string, unknown>[],
  output: KubefedOptions["output"],
  header: string,
): void {
  if (output === "json") {
    ctx.out(`${JSON.stringify({ apiVersion: "v1", kind: "List", items: objects }, null, 2)}\n`);
  } else {
    ctx.out(header);
    ctx.out(objects.map((o) => new Document(o).toString()).join("---\n"));
  }
}
