// Every code tether-agent throws and what the person should do. The agent
// answers no HTTP request, so no code has a status. docs/errors.md lists the
// same table; test/errors-catalogue.test.ts keeps them in step.
import type { ErrorCatalogue } from "@tether/common";

export const AGENT_ERRORS = {
  // bin/tether-agent.js, before anything loads.
  ERR_TETHER_NODE_VERSION: {
    hint: "run tether-agent on the Node.js major its package.json engines name (the image ships it)",
  },

  // Joining (join.ts, identity.ts).
  ERR_TETHER_AGENT_NOT_JOINED: {
    hint: 'pass --cluster, --token and --ca-hash as "tether-server cluster add" printed them, or --ca-file, --cert-file and --key-file',
  },
  ERR_TETHER_AGENT_IDENTITY_UNUSABLE: {
    hint: 'the saved identity is expired, revoked or for another cluster: run "tether-server join-token NAME" and start the agent with the new token',
  },
  ERR_TETHER_SERVER_UNREACHABLE: { hint: "check --server and that tether-server is reachable from this pod" },
  ERR_TETHER_BAD_CA_HASH: { hint: "--ca-hash is sha256: and 64 hex digits, as cluster add printed it" },
  ERR_TETHER_CA_HASH_MISMATCH: {
    hint: "the server at --server is not the one whose CA hash you were given (or --ca-hash is wrong): nothing was sent; check both",
  },
  ERR_TETHER_JOIN_FAILED: { hint: "--server answered, but not as tether-server: check the URL" },
  ERR_TETHER_JOIN_REFUSED: {
    hint: "the server refused the join (token used, expired or for another cluster): get a new one with tether-server join-token NAME",
  },
  ERR_TETHER_CLOCK_SKEW: {
    hint: "this node's clock and the server's differ by more than 5 minutes: fix time sync (NTP) on one of them",
  },

  // Credentials (credentials.ts, secret-credentials.ts).
  ERR_TETHER_AGENT_CERT: {
    hint: "the agent certificate must name its cluster (CN cluster:NAME): use one tether-server issued",
  },
  ERR_TETHER_AGENT_STATE_CORRUPT: {
    hint: "the saved credentials are incomplete or unreadable: remove them and start the agent with a new join token",
  },
  ERR_TETHER_AGENT_STATE_DIR: { hint: "point --state-dir at a directory this user can write" },
  ERR_TETHER_AGENT_SECRET_FORBIDDEN: {
    hint: "bind the agent's service account to the Role tether-server agent-manifest prints (get, create, update on its Secret)",
  },
  ERR_TETHER_AGENT_SECRET_UNAUTHORIZED: {
    hint: "the apiserver refused the pod's service-account token: check the token mounted for the agent",
  },
  ERR_TETHER_AGENT_SECRET_CONFLICT: {
    hint: "another agent is writing the same Secret: give each agent its own --credentials-secret",
  },
  ERR_TETHER_AGENT_SECRET_UNREACHABLE: {
    hint: "the member cluster's apiserver did not answer: check the network and retry",
  },
  ERR_TETHER_AGENT_SECRET_API: {
    hint: "the member cluster's apiserver refused the Secret request: the message has its answer",
  },

  // The egress proxy (egress-proxy.ts).
  ERR_TETHER_AGENT_PROXY_URL: {
    hint: "--proxy or HTTPS_PROXY/HTTP_PROXY is not a proxy URL: give http://[user:password@]host:port (or https://)",
  },
  ERR_TETHER_AGENT_EXPOSE: {
    hint: "--expose is NAME=URL, each NAME once: NAME a lowercase DNS label of at most 55 characters, URL http:// or https:// without credentials, query or fragment",
  },
  ERR_TETHER_AGENT_PROXY_UNREACHABLE: {
    hint: "the egress proxy did not accept a connection: check its host and port in --proxy or HTTPS_PROXY, and that this pod may reach it",
  },
  ERR_TETHER_AGENT_PROXY_AUTH: {
    hint: "the egress proxy answered 407 (or 401): put its user and password in the proxy URL (http://user:password@host:port, percent-encoded), or correct them",
  },
  ERR_TETHER_AGENT_PROXY_FORBIDDEN: {
    hint: "the egress proxy answered 403 to CONNECT: have its administrators allow CONNECT to tether-server's host and port",
  },
  ERR_TETHER_AGENT_PROXY_REFUSED: {
    hint: "the egress proxy answered CONNECT with another error or no HTTP at all: the message has its answer; check that the proxy can reach --server",
  },
  ERR_TETHER_AGENT_PROXY_TIMEOUT: {
    hint: "the egress proxy did not open the tunnel in time: check that it is up and can reach tether-server",
  },

  // The member cluster (kube-target.ts).
  ERR_TETHER_KUBE_TARGET: {
    hint: "run in a pod with its service account mounted, or pass --kubeconfig (and --context) for the member cluster",
  },
} as const satisfies ErrorCatalogue;
