export { type AgentOptions, DEFAULT_SERVICES, TetherAgent } from "./agent.js";
export { Backoff, type BackoffOptions } from "./backoff.js";
export { buildProgram, main, VERSION } from "./cli.js";
export {
  CREDENTIALS_FILE,
  type CredentialStore,
  type Credentials,
  CredentialsDir,
  clusterOf,
  keyAndCsr,
  keyMatches,
  renewalDelayMs,
} from "./credentials.js";
export { Forwarder } from "./forwarder.js";
export { JoinError, type JoinOptions, join } from "./join.js";
export {
  inClusterTarget,
  type KubeTarget,
  kubeconfigTarget,
  TargetConfigError,
  TokenFile,
} from "./kube-target.js";
export { SecretCredentials } from "./secret-credentials.js";
