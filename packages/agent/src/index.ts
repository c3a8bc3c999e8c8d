export { AGENT_PATH, type AgentOptions, DEFAULT_SERVICES, TetherAgent } from "./agent.js";
export { Backoff, type BackoffOptions } from "./backoff.js";
export { buildProgram, main, VERSION } from "./cli.js";
export { Forwarder } from "./forwarder.js";
export {
  inClusterTarget,
  type KubeTarget,
  kubeconfigTarget,
  TargetConfigError,
  TokenFile,
} from "./kube-target.js";
