export { statusBody } from "@tether/common";
export { buildProgram, main, runCli, runCliCaptured, VERSION } from "./cli/cli.js";
export { createLogger, type Logger, loggableHeaders, REDACT_PATHS } from "./logger.js";
export { identityFromCertificate, identityFromPeerCertificate, type PeerIdentity } from "./pki/identity.js";
export { CertificateAuthority, csrPublicKey, type KeyPairPem, validateClusterName } from "./pki/pki.js";
export { hashToken, issueToken } from "./pki/tokens.js";
export { type AgentSession, AgentSessions } from "./proxy/agent-sessions.js";
export { type AuthenticatedCaller, authenticate, mayUseCluster } from "./proxy/authenticate.js";
export { CLUSTER_PATH, ClusterProxy } from "./proxy/cluster-proxy.js";
export {
  type Caller,
  IDENTITY_PREFIX,
  impersonationHeaders,
  rewriteHeaders,
} from "./proxy/forwarded-headers.js";
export { type ServerOptions, TetherServer } from "./server.js";
export { type ClusterStatus, ClusterStatusReporter } from "./store/cluster-status.js";
export { defaultStateDir, FileStore } from "./store/file-store.js";
export { DEFAULT_NAMESPACE, KubeStore, type KubeStoreOptions } from "./store/kube-store.js";
export type { AuthMode, ClusterRecord, Store, TokenRecord } from "./store/state-store.js";
