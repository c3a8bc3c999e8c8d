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
} from "./cluster.js";
