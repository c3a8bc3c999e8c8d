export { type Binaries, ensureBinaries, HarnessBuildError } from "./binaries.js";
export {
  type ApiResult,
  type Cluster,
  type ClusterSet,
  freePort,
  type KubectlOptions,
  type KubectlResult,
  NODE_NAME,
  type StartOptions,
  startClusters,
  sweepAbandoned,
} from "./cluster.js";
export { type KubeconfigSpec, kubeconfigYaml, writeKubeconfig } from "./kubeconfig.js";
export { KubectlProcess } from "./kubectl-process.js";
