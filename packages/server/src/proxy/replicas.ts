// Several active tether-server replicas: the owner Leases (store/ownership.ts)
// and the hop between replicas (replica-hop.ts), started together from the
// serve flags. The replica certificate is issued at every start from the CA
// in the store; it never leaves the process.
import type { Logger } from "../logger.js";
import type { CertificateAuthority } from "../pki/pki.js";
import type { KubeApi } from "../store/kube-api.js";
import { Ownership } from "../store/ownership.js";
import { ReplicaHop } from "./replica-hop.js";

export interface ReplicaOptions {
  /** The host cluster (the Kubernetes store's connection) and the store's namespace. */
  api: KubeApi;
  namespace: string;
  /** --replica-id: unique among the replicas (the pod name). */
  id: string;
  /** --replica-address: https://host:port where the other replicas reach this one. */
  address: string;
  /** Where the replica listener listens (the address's port on --listen's host). */
  listenHost: string;
  listenPort: number;
  leaseDurationMs?: number;
  tlsHandshakeTimeoutMs?: number;
  /** The Cluster object's uid: the owner Lease goes with it. */
  clusterUid?: (cluster: string) => Promise<string | undefined>;
}

export interface Replicas {
  ownership: Ownership;
  hop: ReplicaHop;
  close(): Promise<void>;
}

export async function startReplicas(
  o: ReplicaOptions,
  ca: CertificateAuthority,
  log: Logger,
): Promise<Replicas> {
  const identity = await ca.issueReplicaCertificate(o.id);
  const ownership = new Ownership({
    api: o.api,
    namespace: o.namespace,
    replicaId: o.id,
    address: o.address,
    log,
    ...(o.leaseDurationMs ? { leaseDurationMs: o.leaseDurationMs } : {}),
    ...(o.clusterUid ? { clusterUid: o.clusterUid } : {}),
  });
  await ownership.start();
  const hop = new ReplicaHop({
    ownership,
    caPem: ca.certPem,
    certPem: identity.certPem,
    keyPem: identity.keyPem!,
    host: o.listenHost,
    port: o.listenPort,
    log,
    handshakeTimeoutMs: o.tlsHandshakeTimeoutMs ?? 10_000,
  });
  log.info({ replica: o.id, address: o.address }, "running as one of several replicas");
  return {
    ownership,
    hop,
    async close() {
      await ownership.close();
      await hop.close();
    },
  };
}
