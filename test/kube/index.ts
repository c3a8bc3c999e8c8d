export { type Binaries, ensureBinaries, HarnessBuildError } from "./binaries.js";
export {
  type ApiResult,
  type Cluster,
  type ClusterSet,
  freePort,
  type KubeconfigSpec,
  kubeconfigYaml,
  writeKubeconfig,
  type KubectlOptions,
  type KubectlResult,
  NODE_NAME,
  type StartOptions,
  startClusters,
  sweepAbandoned,
} from "./cluster.js";
export { KubectlProcess } from "./kubectl-process.js";
