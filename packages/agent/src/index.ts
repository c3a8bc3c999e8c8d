// @tether/agent for embedders: the agent itself, how it joins, where it keeps
// its identity and which apiserver it forwards to.
export { type AgentOptions, TetherAgent } from "./agent.js";
export type { BackoffOptions } from "./backoff.js";
export { main } from "./cli.js";
export { type CredentialStore, type Credentials, CredentialsDir, keyAndCsr } from "./credentials.js";
export { type ExposedService, parseExpose } from "./exposed-services.js";
export { type JoinOptions, join } from "./join.js";
export { inClusterTarget, type KubeTarget, kubeconfigTarget } from "./kube-target.js";
export { AgentMetrics } from "./metrics.js";
