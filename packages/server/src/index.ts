// @tether/server for embedders: the server, its stores, the CA, tokens, the
// logger and the command line.
export { main, runCliCaptured } from "./cli/cli.js";
export { createLogger, type Logger } from "./logger.js";
export type { AuditSink } from "./observe/audit-file.js";
export { AuditLog } from "./observe/audit-log.js";
export { CertificateAuthority, type KeyPairPem } from "./pki/pki.js";
export { hashToken, issueToken } from "./pki/tokens.js";
export { REPLAY_LIMIT } from "./proxy/replayable-body.js";
export { type ServerOptions, TetherServer } from "./server.js";
export { FileStore } from "./store/file-store.js";
export { KubeStore, type KubeStoreOptions } from "./store/kube-store.js";
export type { AuthMode, ClusterInput, ClusterRecord, Store, TokenRecord } from "./store/state-store.js";
export { type ReadDecision, ReadAccess } from "./http/read-access.js";
export { TetherMetrics } from "./observe/metrics.js";
export { type OidcOptions, OidcVerifier } from "./proxy/identity/oidc.js";
export { type HostApi, TokenReviewer, type TokenReviewOptions } from "./proxy/identity/token-review.js";
export type { IdentitySources } from "./proxy/identity/identity-sources.js";
export { KubeApi } from "./store/kube-api.js";
