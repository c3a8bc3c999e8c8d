export { GoAwayCode, goAwayCodeName, ResetCode, resetCodeName } from "./codes.js";
export { ErrorCode, isTetherError, type TetherError } from "./errors.js";
export { INITIAL_WINDOW, MAX_FRAME_PAYLOAD, MAX_MESSAGE_SIZE, PROTOCOL_VERSION } from "./frame.js";
export {
  MAX_METADATA_ENTRIES,
  MAX_METADATA_VALUE,
  MAX_OPEN_HEADER,
  type Metadata,
  type OpenRequest,
} from "./open-header.js";
export { type AcceptDecision, DEFAULT_OPTIONS, type SessionOptions } from "./options.js";
export {
  formatPathEstimate,
  mirrorPathEstimate,
  PATH_ESTIMATE_HEADER,
  type PathEstimate,
  parsePathEstimate,
  sanitizePathEstimate,
} from "./path-estimate.js";
export { PATH_MEMORY_TTL_MS, PathMemory } from "./path-memory.js";
export { Session, type SessionEvents, type Transport } from "./session.js";
export { TunnelStream } from "./stream.js";
export { sessionFromWebSocket, WEBSOCKET_OPTIONS } from "./websocket.js";
