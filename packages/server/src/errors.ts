// Every code tether-server throws, with the HTTP status the admin API answers
// with (none: the error is the server's own, answered as 500
// ERR_TETHER_INTERNAL and logged) and what the person should do. docs/errors.md
// lists the same table; test/errors-catalogue.test.ts keeps the three in step.
import { COMMON_ERRORS, type ErrorCatalogue } from "@tether/common";

export const SERVER_ERRORS = {
  // bin/tether-server.js, before anything loads.
  ERR_TETHER_NODE_VERSION: {
    hint: "run tether-server on the Node.js major its package.json engines name (the image ships it)",
  },

  // Admin API (admin-api.ts) and its remote client (remote-cluster-admin.ts).
  ERR_TETHER_ADMIN_UNAUTHORIZED: {
    status: 401,
    hint: "pass --credential with the current admin credential (serve writes admin-credential.json in its state; rotate-admin-credential replaces it)",
  },
  ERR_TETHER_ADMIN_FORBIDDEN: {
    status: 403,
    hint: "only the admin token may use the admin API: use the admin credential, not a user token or certificate",
  },
  ERR_TETHER_ADMIN_BAD_REQUEST: {
    status: 400,
    hint: "the request's path or body is malformed: use a tether-server CLI of the server's version",
  },
  ERR_TETHER_RATE_LIMITED: {
    status: 429,
    hint: "too many failed authentications from this address: wait the Retry-After seconds, then use a valid credential",
  },
  ERR_TETHER_ADMIN_NOT_FOUND: {
    status: 404,
    hint: "no such admin API route: use a tether-server CLI of the server's version",
  },
  ERR_TETHER_INTERNAL: {
    status: 500,
    hint: "the server failed on its own: its log has the error with the same time",
  },
  ERR_TETHER_SERVER_UNREACHABLE: {
    hint: "check --server (or the URL in the credential), that serve runs there, and that the credential is for that server",
  },
  ERR_TETHER_CREDENTIAL: {
    hint: "the admin credential file is unreadable, readable by others (chmod 600 it) or not a credential: take it from the server's state again",
  },

  // Admin command input (admin-input.ts, cluster-admin.ts, agent-manifest.ts).
  ERR_TETHER_CLUSTER_EXISTS: {
    status: 409,
    hint: "pick another name, or remove the cluster first (cluster remove NAME)",
  },
  ERR_TETHER_UNKNOWN_CLUSTER: {
    status: 404,
    hint: "check the name against cluster list",
  },
  ERR_TETHER_UNKNOWN_TOKEN: {
    status: 404,
    hint: "check the id against token list (an expired token is gone already)",
  },
  ERR_TETHER_INVALID_TOKEN_ID: {
    status: 400,
    hint: "a token id is tok_ and 16 hex digits, as token list shows it",
  },
  ERR_TETHER_INVALID_CLUSTER_NAME: {
    status: 400,
    hint: "a cluster name is a DNS-1123 label: lowercase letters, digits and '-', at most 63, starting and ending alphanumeric",
  },
  ERR_TETHER_NO_SERVER_URL: {
    status: 400,
    hint: "start serve once (it records its URL) or pass --server-url",
  },
  ERR_TETHER_BAD_SERVER_URL: {
    status: 400,
    hint: "pass an https:// URL without credentials, a query or a fragment, e.g. https://tether.example.com:8443",
  },
  ERR_TETHER_BAD_DURATION: {
    status: 400,
    hint: "write a duration as 90s, 15m, 24h, 7d or 1h30m, within the stated maximum",
  },
  ERR_TETHER_BAD_LABEL: {
    status: 400,
    hint: "write each label as key=value in Kubernetes label syntax, each key once",
  },
  ERR_TETHER_BAD_AUTH_MODE: { status: 400, hint: "--auth is impersonate or passthrough" },
  ERR_TETHER_BAD_IDENTITY: {
    status: 400,
    hint: "a user or group name is 1 to 256 characters without control characters or surrounding spaces",
  },
  ERR_TETHER_RESERVED_GROUP: {
    status: 400,
    hint: "system: groups belong to Kubernetes: grant a group of your own with RBAC instead",
  },
  ERR_TETHER_RESERVED_USER: {
    status: 400,
    hint: "system: users belong to Kubernetes: issue the token for a person's or a tool's own name",
  },
  ERR_TETHER_BAD_SERVICE_NAME: {
    status: 400,
    hint: "a service name is a lowercase DNS label of at most 55 characters, the NAME of the agent's --expose NAME=URL",
  },
  ERR_TETHER_BAD_IMAGE: { hint: "--image is an image reference: registry/path[:tag][@sha256:digest]" },
  ERR_TETHER_BAD_NAMESPACE: { hint: "--namespace is a DNS-1123 label" },
  ERR_TETHER_BAD_EXPOSE: {
    hint: "--agent-expose is NAME=URL: NAME a lowercase DNS label of at most 55 characters, URL http:// or https:// without credentials, query or fragment",
  },
  ERR_TETHER_BAD_PROXY: {
    hint: "--agent-proxy is http://[user:password@]host:port (or https://); --agent-no-proxy a list of hosts, domains and ranges",
  },
  ERR_TETHER_INVALID_LIMIT: {
    hint: "give each limit option a count or duration in the range docs/operations.md states",
  },
  ERR_TETHER_METRICS_TOKEN: {
    hint: "--metrics-token-file must be readable and hold one token of at least 32 characters (e.g. openssl rand -hex 32 > FILE)",
  },

  ERR_TETHER_AUDIT_LOG: {
    hint: "give --audit-log a file this user may create or append to (or - for stdout); --audit-level metadata needs --audit-log",
  },

  // PKI (pki.ts).
  ERR_TETHER_BAD_CA: {
    hint: "the CA certificate and key in the state do not load or do not match: restore ca.crt and ca.key together from a backup",
  },
  ERR_TETHER_BAD_CSR: {
    status: 400,
    hint: "the agent sent a certificate request that is not a signed PKCS#10 EC P-256 CSR: use a tether-agent of the server's version",
  },
  ERR_TETHER_INVALID_CERT_REQUEST: {
    status: 400,
    hint: "a certificate was asked for with an invalid name, address, lifetime or incarnation: a bug in the caller, report it",
  },

  // State: the file store (state-store.ts) and the Kubernetes store (kube-store.ts, kube-api.ts).
  ERR_TETHER_INVALID_RECORD: {
    status: 400,
    hint: "a record handed to the store is malformed (or a token hash is already taken): the message names the field",
  },
  ERR_TETHER_STATE_DIR: {
    hint: "create the state directory writable by this user, or point --state-dir (or TETHER_STATE_DIR) elsewhere",
  },
  ERR_TETHER_STATE_LOCKED: {
    status: 503,
    hint: "another tether-server process holds the state: stop it, or remove the lock file the message names if it is gone",
  },
  ERR_TETHER_STATE_VERSION: {
    hint: "the state was written by a newer Tether: run that version, or restore a backup",
  },
  ERR_TETHER_KUBE_CONFIG: {
    hint: "pass --kubeconfig (and --context) for the host cluster, or run in a pod with a service account",
  },
  ERR_TETHER_KUBE_UNREACHABLE: {
    status: 503,
    hint: "the host cluster's apiserver did not answer: check the kubeconfig's server and the network, then retry",
  },
  ERR_TETHER_KUBE_FORBIDDEN: {
    status: 502,
    hint: "grant tether-server's identity the RBAC in deploy/server (ClusterRole on clusters.tether.io, Role on secrets and configmaps)",
  },
  ERR_TETHER_KUBE_NO_CRD: { status: 502, hint: "install the CRD: kubectl apply -k deploy/crd" },
  ERR_TETHER_KUBE_NAMESPACE: {
    hint: "create the namespace (kubectl create namespace tether-system) or pass --namespace",
  },
  ERR_TETHER_KUBE_CONFLICT: {
    status: 409,
    hint: "another writer kept changing the same object: retry; if it persists, look for a second server writing the same state",
  },
  ERR_TETHER_KUBE_API: {
    status: 502,
    hint: "the host cluster's apiserver refused a request: the message has its answer",
  },

  // Identity sources (proxy/identity/, cli/identity-options.ts).
  ERR_TETHER_IDENTITY_UNAVAILABLE: {
    status: 503,
    hint: "the host apiserver's TokenReview or the OIDC issuer could not judge the token: the message says which; retry, and check tether-server's RBAC (create tokenreviews) or the issuer",
  },
  ERR_TETHER_IDENTITY_CONFIG: {
    hint: "give --oidc-issuer-url (https) with --oidc-client-id, a readable --oidc-ca-file, and --host-kubeconfig only with --host-service-accounts",
  },
} as const satisfies ErrorCatalogue;

/** The server's codes and those of @tether/common it throws. */
export const ALL_SERVER_ERRORS: ErrorCatalogue = { ...COMMON_ERRORS, ...SERVER_ERRORS };

/** The catalogue's HTTP status for a coded error; undefined for any other error or a code without one. */
export function httpStatusOf(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null | undefined)?.code;
  return typeof code === "string" && Object.hasOwn(ALL_SERVER_ERRORS, code)
    ? ALL_SERVER_ERRORS[code]!.status
    : undefined;
}
