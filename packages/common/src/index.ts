// @tether/common: the contract between tether-server and tether-agent, and the
// small helpers both sides need. It knows neither role.
export {
  ERR_TETHER_STATE_CORRUPT,
  parseJsonText,
  removeStaleTempFiles,
  writeFileAtomic,
} from "./atomic-file.js";
export { arrivedWhole, type BodyMismatch, declaredLength, pipeBody } from "./body-pipe.js";
export { caHashOf } from "./ca-hash.js";
export { codedError, formatError, TetherError } from "./coded-error.js";
export {
  AGENT_FEATURES_HEADER,
  AGENT_PATH,
  AGENT_INSTANCE_HEADER,
  AGENT_VERSION_HEADER,
  AUTH_METADATA,
  type AuthMode,
  EXPOSED_SERVICE_PREFIX,
  exposedServiceStream,
  identityHeaderValue,
  type IssuedForAgent,
  isAuthMode,
  isExposedServiceName,
  JOIN_CA_PATH,
  JOIN_CERTIFICATE_PATH,
  type JoinRequest,
  KUBERNETES_SERVICE,
  MAX_JOIN_BODY,
  RENEW_SERVICE,
  type RenewRefusal,
  type RenewRequest,
  SERVICE_CLUSTER_HEADER,
  SERVICE_GROUP_HEADER,
  SERVICE_USER_HEADER,
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
export {
  CONNECTION_HEADERS,
  ERR_TETHER_HEAD_INVALID,
  ERR_TETHER_HEAD_TOO_LARGE,
  encodeRequestHead,
  encodeResponseHead,
  HEAD_FEATURE,
  HEAD_METADATA,
  HEAD_VERSION,
  type HeaderPairs,
  MAX_HEAD_BYTES,
  type RequestHead,
  type ResponseHead,
  readRequestHead,
  readResponseHead,
} from "./request-head.js";
export { packageVersion } from "./package-version.js";
export { type ProxyUrl, parseProxyUrl } from "./proxy-url.js";
export { servicePathRefusal } from "./service-path.js";
