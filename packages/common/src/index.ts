// @tether/common: the contract between tether-server and tether-agent, and the
// small helpers both sides need. It knows neither role.
export {
  ERR_TETHER_STATE_CORRUPT,
  parseJsonText,
  removeStaleTempFiles,
  writeFileAtomic,
} from "./atomic-file.js";
export { caHashOf } from "./ca-hash.js";
export { codedError, formatError, TetherError } from "./coded-error.js";
export {
  AGENT_PATH,
  AGENT_INSTANCE_HEADER,
  AGENT_VERSION_HEADER,
  AUTH_METADATA,
  type AuthMode,
  type IssuedForAgent,
  isAuthMode,
  JOIN_CA_PATH,
  JOIN_CERTIFICATE_PATH,
  type JoinRequest,
  KUBERNETES_SERVICE,
  MAX_JOIN_BODY,
  RENEW_SERVICE,
  type RenewRefusal,
  type RenewRequest,
} from "./contract.js";
export { COMMON_ERRORS, type ErrorCatalogue, type ErrorInfo } from "./errors.js";
export { type JsonAnswer, requestJson } from "./json-request.js";
export {
  type StatusReason,
  sendStatus,
  statusBody,
  statusCodeOf,
  statusResponseHead,
} from "./k8s-status.js";
export { packageVersion } from "./package-version.js";
