export { statusBody } from "@tether/common";
export { type AgentSession, AgentSessions } from "./agent-sessions.js";
export { type AuthenticatedCaller, authenticate, mayUseCluster } from "./authenticate.js";
export { buildProgram, main, runCli, runCliCaptured, VERSION } from "./cli.js";
export { CLUSTER_PATH, ClusterProxy } from "./cluster-proxy.js";
export { type ClusterStatus, ClusterStatusReporter } from "./cluster-status.js";
export { type Caller, IDENTITY_PREFIX, impersonationHeaders, rewriteHeaders } from "./forwarded-headers.js";
export { identityFromCertificate, identityFromPeerCertificate, type PeerIdentity } from "./identity.js";
export { DEFAULT_NAMESPACE, KubeStore, type KubeStoreOptions } from "./kube-store.js";
export { createLogger, type Logger, loggableHeaders, REDACT_PATHS } from "./logger.js";
export { CertificateAuthority, csrPublicKey, type KeyPairPem, validateClusterName } from "./pki.js";
export { type ServerOptions, TetherServer } from "./server.js";
export {
  type AuthMode,
  type ClusterRecord,
  defaultStateDir,
  FileStore,
  type Store,
  type TokenRecord,
} from "./state-store.js";
export { hashToken, issueToken } from "./tokens.js";
