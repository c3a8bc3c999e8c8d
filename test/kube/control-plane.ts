// How one harness cluster's processes are configured: the files they share
// (certificates, keys, kubeconfigs) and each one's flags. kube-apiserver runs
// the Node and RBAC authorizers with NodeRestriction, as kubeadm sets it up;
// kube-controller-manager and kube-scheduler each have their own identity,
// serve nothing (secure port 0) and skip leader election (one of each per
// cluster); the kubelet stand-in is the Node, as system:node:<name>.
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { writeKubeconfig } from "./kubeconfig.js";
import type { ClusterPki } from "./pki.js";

export interface ClusterFiles {
  logsRoot: string;
  caFile: string;
  adminToken: string;
  apiserver: string[];
  controllerManager: string[];
  scheduler: string[];
  kubeletStandin: string[];
}

/**
 * Controllers that cannot work without a cloud or a pod network: node IPAM
 * would need --allocate-node-cidrs. The cloud controllers (routes, service
 * load balancers, cloud node lifecycle) live in the cloud-controller-manager
 * since 1.31 and the bootstrap-token ones are off by default.
 */
const CONTROLLERS = "*,-node-ipam-controller";

/** Writes the cluster's files into `dir` and returns every process's arguments. */
export async function clusterFiles(options: {
  dir: string;
  name: string;
  nodeName: string;
  pki: ClusterPki;
  server: string;
  port: number;
  etcdUrl: string;
  /** Issue service-account tokens as https://127.0.0.1:<port> (its discovery is then reachable), not kubernetes.default.svc. */
  selfIssuer?: boolean;
}): Promise<ClusterFiles> {
  const { dir, name, nodeName, pki, server } = options;
  const file = async (base: string, content: string, mode = 0o600) => {
    const path = join(dir, base);
    await writeFile(path, content, { mode });
    return path;
  };
  const kubeconfig = (base: string, identity: { certPem: string; keyPem: string }) =>
    writeKubeconfig(join(dir, base), { name, server, caPem: pki.ca.certPem, ...identity });
  const caFile = await file("ca.crt", pki.ca.certPem, 0o644);
  const caKeyFile = await file("ca.key", pki.ca.keyPem);
  const saKey = await file("sa.key", pki.serviceAccount.privatePem);
  const adminToken = randomBytes(24).toString("hex");
  const tokenFile = await file(
    "tokens.csv",
    `${adminToken},tether-harness-admin-token,admin-token,"system:masters"\n`,
  );
  const logsRoot = join(dir, "container-logs");

  const apiserver = [
    `--etcd-servers=${options.etcdUrl}`,
    `--etcd-prefix=/registry-${name}`,
    "--bind-address=127.0.0.1",
    "--advertise-address=127.0.0.1",
    `--secure-port=${options.port}`,
    `--cert-dir=${join(dir, "apiserver-certs")}`,
    `--tls-cert-file=${await file("apiserver.crt", pki.apiserver.certPem, 0o644)}`,
    `--tls-private-key-file=${await file("apiserver.key", pki.apiserver.keyPem)}`,
    `--client-ca-file=${caFile}`,
    `--token-auth-file=${tokenFile}`,
    "--authorization-mode=Node,RBAC",
    "--enable-admission-plugins=NodeRestriction",
    "--service-cluster-ip-range=10.0.0.0/24",
    ...(options.selfIssuer ? [`--service-account-issuer=${server}`] : []),
    "--service-account-issuer=https://kubernetes.default.svc",
    `--service-account-key-file=${await file("sa.pub", pki.serviceAccount.publicPem, 0o644)}`,
    `--service-account-signing-key-file=${saKey}`,
    `--kubelet-client-certificate=${await file("kubelet-client.crt", pki.kubeletClient.certPem, 0o644)}`,
    `--kubelet-client-key=${await file("kubelet-client.key", pki.kubeletClient.keyPem)}`,
    `--kubelet-certificate-authority=${caFile}`,
    "--kubelet-preferred-address-types=InternalIP",
    "--profiling=false",
    "--endpoint-reconciler-type=none",
  ];

  const controllerManager = [
    `--kubeconfig=${await kubeconfig("controller-manager.kubeconfig", pki.controllerManager)}`,
    "--bind-address=127.0.0.1",
    "--secure-port=0",
    "--leader-elect=false",
    // Each controller acts as its own service account (system:controller:*), as in kubeadm.
    "--use-service-account-credentials=true",
    // The token controller signs legacy service-account token Secrets with it.
    `--service-account-private-key-file=${saKey}`,
    // The root CA publisher puts it in every namespace's kube-root-ca.crt.
    `--root-ca-file=${caFile}`,
    `--cluster-signing-cert-file=${caFile}`,
    `--cluster-signing-key-file=${caKeyFile}`,
    `--controllers=${CONTROLLERS}`,
    "--profiling=false",
  ];

  const scheduler = [
    `--kubeconfig=${await kubeconfig("scheduler.kubeconfig", pki.scheduler)}`,
    "--bind-address=127.0.0.1",
    "--secure-port=0",
    "--leader-elect=false",
    "--profiling=false",
  ];

  const kubeletStandin = [
    "--listen=127.0.0.1:0",
    `--tls-cert-file=${await file("kubelet.crt", pki.kubeletServing.certPem, 0o644)}`,
    `--tls-private-key-file=${await file("kubelet.key", pki.kubeletServing.keyPem)}`,
    `--client-ca-file=${caFile}`,
    `--log-root=${logsRoot}`,
    `--kubeconfig=${await kubeconfig("node.kubeconfig", pki.node)}`,
    `--node-name=${nodeName}`,
  ];

  return { logsRoot, caFile, adminToken, apiserver, controllerManager, scheduler, kubeletStandin };
}
