// What runs tether-agent in a member cluster, as Kubernetes objects: its
// namespace, service account and RBAC, a Secret with the join values, and a
// two-replica Deployment. `tether-server agent-manifest NAME` prints them with
// a fresh join token; deploy/agent/ is the same objects with placeholder join
// values, written by scripts/generate-deploy.ts and checked against this file
// by packages/server/test/manifest/agent-manifest.test.ts, so the two cannot drift.
import type {
  KubernetesObject,
  V1ClusterRole,
  V1ClusterRoleBinding,
  V1Deployment,
  V1EnvVar,
  V1Namespace,
  V1Role,
  V1RoleBinding,
  V1Secret,
  V1ServiceAccount,
} from "@kubernetes/client-node";
import { isExposedServiceName } from "@tether/common";
import { Document } from "yaml";
import {
  DEFAULT_JOIN_TOKEN_TTL,
  ERR_TETHER_CLUSTER_EXISTS,
  ERR_TETHER_UNKNOWN_CLUSTER,
  fail,
  MAX_JOIN_TOKEN_TTL_MS,
  parseTtl,
  q,
} from "../admin/admin-input.js";
import type { ClusterAdmin, JoinInfo } from "../admin/cluster-admin.js";
import type { AdminContext } from "../cli/admin-commands.js";
import { isValidClusterName } from "../pki/pki.js";
import { VERSION } from "../version.js";
import { type AgentEgress, checkEgress, egressObjects } from "./agent-egress.js";

/** The one image with both programs (Dockerfile at the repository root); every manifest references it. */
export const TETHER_IMAGE = `ghcr.io/tether-dev/tether:${VERSION}`;
export const AGENT_NAMESPACE = "tether-agent";
/** The ServiceAccount and the Deployment. */
export const AGENT_NAME = "tether-agent";
export const JOIN_SECRET = "tether-agent-join";
/** Where the agent keeps its key and certificate (its --credentials-secret). */
export const CREDENTIALS_SECRET = "tether-agent-credentials";
/** The non-root user of the image (distroless "nonroot"). */
export const IMAGE_USER = 65532;

export const ERR_TETHER_BAD_IMAGE = "ERR_TETHER_BAD_IMAGE";
export const ERR_TETHER_BAD_NAMESPACE = "ERR_TETHER_BAD_NAMESPACE";
export const ERR_TETHER_BAD_EXPOSE = "ERR_TETHER_BAD_EXPOSE";

/** What the agent needs to join: the values `cluster add` and `join-token` print. */
export interface JoinValues {
  server: string;
  cluster: string;
  token: string;
  caHash: string;
}

export interface AgentManifestOptions {
  join: JoinValues;
  namespace?: string;
  image?: string;
  /** An egress proxy for the agent (agent-egress.ts). */
  egress?: AgentEgress;
  /** The agent's --expose NAME=URL values. */
  expose?: string[];
}

const MAX_IMAGE_LENGTH = 512;
// registry[:port]/path[:tag][@sha256:digest], loosely: enough to refuse spaces, quotes and newlines.
const IMAGE_RE =
  /^[a-z0-9][a-z0-9._/-]*(?::[0-9]+\/[a-z0-9._/-]+)?(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$/;

export function checkImage(image: string): string {
  if (image.length > MAX_IMAGE_LENGTH || !IMAGE_RE.test(image)) {
    fail(
      ERR_TETHER_BAD_IMAGE,
      `invalid image ${q(image)}: give an image reference such as ${TETHER_IMAGE} (registry/path[:tag][@sha256:digest])`,
    );
  }
  return image;
}

/**
 * An --expose NAME=URL for the agent's command line, checked as far as the
 * server can (the agent checks the rest when it starts): a wrong one would
 * only show as a crash-looping pod.
 */
export function checkExpose(value: string): string {
  const at = value.indexOf("=");
  let url: URL | undefined;
  try {
    url = new URL(value.slice(at + 1));
  } catch {}
  const ok =
    at > 0 &&
    isExposedServiceName(value.slice(0, at)) &&
    url !== undefined &&
    (url.protocol === "http:" || url.protocol === "https:") &&
    !url.username &&
    !url.password &&
    !url.search &&
    !value.includes("#") &&
    !/\s/.test(value);
  if (!ok) {
    fail(
      ERR_TETHER_BAD_EXPOSE,
      `invalid --agent-expose ${q(value)}: give NAME=URL, NAME a lowercase DNS label of at most 55 characters and URL http:// or https:// without credentials, query or fragment`,
    );
  }
  return value;
}

export function checkNamespace(namespace: string): string {
  if (!isValidClusterName(namespace)) {
    fail(
      ERR_TETHER_BAD_NAMESPACE,
      `invalid namespace ${q(namespace)}: a namespace must be a DNS-1123 label — ` +
        `1 to 63 characters, lowercase letters, digits and '-', starting and ending with a letter or digit`,
    );
  }
  return namespace;
}

const RBAC = "rbac.authorization.k8s.io";
const JOIN_ENV: [string, keyof JoinValues][] = [
  ["TETHER_SERVER", "server"],
  ["TETHER_CLUSTER", "cluster"],
  ["TETHER_JOIN_TOKEN", "token"],
  ["TETHER_CA_HASH", "caHash"],
];

/** The agent's objects, in the order they can be applied (the namespace first, the Deployment last). */
export function agentManifestObjects(opts: AgentManifestOptions): KubernetesObject[] {
  const namespace = checkNamespace(opts.namespace ?? AGENT_NAMESPACE);
  const image = checkImage(opts.image ?? TETHER_IMAGE);
  const labels = { "app.kubernetes.io/name": AGENT_NAME, "app.kubernetes.io/part-of": "tether" };
  const meta = (name: string) => ({ name, namespace, labels });
  // Cluster-scoped names carry the namespace, so that two agents in one cluster don't share a binding.
  const impersonator = `${namespace}-impersonate`;
  const serviceAccount = { kind: "ServiceAccount", name: AGENT_NAME, namespace };
  const egress = egressObjects(checkEgress(opts.egress ?? {}), JOIN_SECRET);
  const expose = (opts.expose ?? []).map(checkExpose);

  const ns: V1Namespace = { apiVersion: "v1", kind: "Namespace", metadata: { name: namespace, labels } };
  const sa: V1ServiceAccount = {
    apiVersion: "v1",
    kind: "ServiceAccount",
    metadata: meta(AGENT_NAME),
    automountServiceAccountToken: true,
  };
  // Every request the agent forwards in impersonate mode carries Impersonate-User
  // and Impersonate-Group (tether:<name>). deploy/README.md shows how to narrow
  // this to the exact identities with resourceNames.
  const impersonate: V1ClusterRole = {
    apiVersion: `${RBAC}/v1`,
    kind: "ClusterRole",
    metadata: { name: impersonator, labels },
    rules: [{ apiGroups: [""], resources: ["users", "groups", "serviceaccounts"], verbs: ["impersonate"] }],
  };
  const impersonateBinding: V1ClusterRoleBinding = {
    apiVersion: `${RBAC}/v1`,
    kind: "ClusterRoleBinding",
    metadata: { name: impersonator, labels },
    roleRef: { apiGroup: RBAC, kind: "ClusterRole", name: impersonator },
    subjects: [serviceAccount],
  };
  // The agent reads its credentials Secret (get), writes it on the first join
  // (create) and on each renewal (update, with the resourceVersion it read).
  // RBAC cannot limit create by name: the name isn't known when create is authorized.
  const credentials: V1Role = {
    apiVersion: `${RBAC}/v1`,
    kind: "Role",
    metadata: meta(CREDENTIALS_SECRET),
    rules: [
      {
        apiGroups: [""],
        resources: ["secrets"],
        resourceNames: [CREDENTIALS_SECRET],
        verbs: ["get", "update"],
      },
      { apiGroups: [""], resources: ["secrets"], verbs: ["create"] },
    ],
  };
  const credentialsBinding: V1RoleBinding = {
    apiVersion: `${RBAC}/v1`,
    kind: "RoleBinding",
    metadata: meta(CREDENTIALS_SECRET),
    roleRef: { apiGroup: RBAC, kind: "Role", name: CREDENTIALS_SECRET },
    subjects: [serviceAccount],
  };
  const joinSecret: V1Secret = {
    apiVersion: "v1",
    kind: "Secret",
    metadata: meta(JOIN_SECRET),
    type: "Opaque",
    stringData: { ...opts.join, ...egress.secretData },
  };
  const env: V1EnvVar[] = [
    ...JOIN_ENV.map(([name, key]) => ({
      name,
      valueFrom: { secretKeyRef: { name: JOIN_SECRET, key } },
    })),
    ...egress.env,
  ];
  const deployment: V1Deployment = {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: meta(AGENT_NAME),
    spec: {
      // Two agents, each with its tunnel (the server spreads streams over both): losing a pod or
      // its node fails only the streams it carried. They share the credentials Secret; a write
      // that races the other's re-reads and writes again (secret-credentials.ts).
      replicas: 2,
      // One pod at a time: the other keeps the cluster reachable through a rollout.
      strategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 1, maxSurge: 0 } },
      selector: { matchLabels: { "app.kubernetes.io/name": AGENT_NAME } },
      template: {
        metadata: { labels },
        spec: {
          serviceAccountName: AGENT_NAME,
          // On different nodes where there are several; preferred, so a one-node cluster runs both.
          affinity: {
            podAntiAffinity: {
              preferredDuringSchedulingIgnoredDuringExecution: [
                {
                  weight: 100,
                  podAffinityTerm: {
                    labelSelector: { matchLabels: { "app.kubernetes.io/name": AGENT_NAME } },
                    topologyKey: "kubernetes.io/hostname",
                  },
                },
              ],
            },
          },
          // The agent authenticates to its own apiserver with this token.
          automountServiceAccountToken: true,
          securityContext: {
            runAsNonRoot: true,
            runAsUser: IMAGE_USER,
            runAsGroup: IMAGE_USER,
            seccompProfile: { type: "RuntimeDefault" },
          },
          containers: [
            {
              name: "agent",
              image,
              args: [
                "tether-agent",
                "--credentials-secret",
                CREDENTIALS_SECRET,
                ...expose.flatMap((e) => ["--expose", e]),
              ],
              env,
              resources: { requests: { cpu: "50m", memory: "64Mi" }, limits: { memory: "256Mi" } },
              securityContext: {
                allowPrivilegeEscalation: false,
                privileged: false,
                readOnlyRootFilesystem: true,
                capabilities: { drop: ["ALL"] },
              },
            },
          ],
        },
      },
    },
  };
  return [ns, sa, impersonate, impersonateBinding, credentials, credentialsBinding, joinSecret, deployment];
}

/** Objects as one multi-document YAML stream, `header` as a comment on top. */
export function manifestYaml(objects: object[], header?: string): string {
  return objects
    .map((o, i) => {
      const doc = new Document(o, { aliasDuplicateObjects: false });
      if (i === 0 && header) doc.commentBefore = header.replace(/^/gm, " ");
      return doc.toString({ lineWidth: 0 });
    })
    .join("---\n");
}

export interface AgentManifestCommandOptions {
  image?: string;
  namespace?: string;
  tokenTtl?: string;
  server?: string;
  egress?: AgentEgress;
  expose?: string[];
}

/** Where the command reports what it did besides the manifest (stderr in the CLI). */
export interface AgentManifestContext extends AdminContext {
  note: (text: string) => void;
}

/** A new join token for `name`; registers the cluster with defaults first when it isn't registered yet. */
async function joinTokenRegistering(
  admin: ClusterAdmin,
  name: string,
  ttlMs: number,
  note: (text: string) => void,
): Promise<JoinInfo> {
  try {
    return await admin.newJoinToken(name, ttlMs);
  } catch (err) {
    if ((err as { code?: string }).code !== ERR_TETHER_UNKNOWN_CLUSTER) throw err;
  }
  try {
    const info = await admin.addCluster({ name }, ttlMs);
    note(
      `Cluster ${name} was not registered: registered it (auth ${info.auth}, no labels; ` +
        `"tether-server cluster remove ${name}" and "cluster add" to choose otherwise).\n`,
    );
    return info;
  } catch (err) {
    // Someone registered it in between: theirs stands.
    if ((err as { code?: string }).code !== ERR_TETHER_CLUSTER_EXISTS) throw err;
    return admin.newJoinToken(name, ttlMs);
  }
}

/**
 * `agent-manifest NAME`: issues a one-time join token for the cluster and
 * prints everything that runs its agent, ready for `kubectl apply -f -`.
 */
export async function agentManifest(
  ctx: AgentManifestContext,
  name: string,
  opts: AgentManifestCommandOptions = {},
): Promise<{ objects: KubernetesObject[]; join: JoinInfo }> {
  // Checked before a token is issued, so that a typo wastes nothing.
  const namespace = checkNamespace(opts.namespace ?? AGENT_NAMESPACE);
  const image = checkImage(opts.image ?? TETHER_IMAGE);
  const egress = checkEgress(opts.egress ?? {});
  const expose = (opts.expose ?? []).map(checkExpose);
  const ttlMs = parseTtl("--token-ttl", opts.tokenTtl ?? DEFAULT_JOIN_TOKEN_TTL, MAX_JOIN_TOKEN_TTL_MS);
  const admin = await ctx.admin(opts.server);
  const info = await joinTokenRegistering(admin, name, ttlMs, ctx.note);
  const join = { server: info.server, cluster: info.name, token: info.token, caHash: info.caHash };
  const objects = agentManifestObjects({ join, namespace, image, egress, expose });
  ctx.out(
    manifestYaml(
      objects,
      `tether-agent for cluster ${info.name}, from tether-server ${VERSION}.\n` +
        `The join token in Secret ${namespace}/${JOIN_SECRET} is single use and expires ${info.expiresAt};\n` +
        `apply with: kubectl --context <member> apply -f -`,
    ),
  );
  return { objects, join: info };
}
