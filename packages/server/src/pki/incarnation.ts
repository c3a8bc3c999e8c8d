// Which registration of a cluster name a certificate belongs to. A cluster's
// incarnation is a UID made when it is registered (`cluster add`; on the
// Kubernetes store the Cluster object's metadata.uid), so a name that is
// removed and registered again is a different cluster: certificates of the
// earlier one neither connect nor renew into it.
//
// Upgrades: certificates issued before incarnations existed carry none. Such
// a certificate still belongs to the registration it was issued under, which
// is the current one exactly when it was issued after the registration was
// created (a re-registered name has a later createdAt). It keeps connecting,
// and its first renewal returns a certificate with the incarnation. These
// certificates expire within the agent certificate lifetime (7 days by
// default) after the upgrade; then only the incarnation rule is left.
import { randomUUID } from "node:crypto";

/** X.509 times have whole seconds: a certificate issued in the second its cluster was created may read as earlier. */
const ISSUED_AT_GRANULARITY_MS = 1_000;

export function newIncarnation(): string {
  return randomUUID();
}

/** What a presented cluster certificate says about itself (an AgentSession is one). */
export interface CertificateIncarnation {
  incarnation?: string;
  certIssuedAt: Date;
}

/** The registration a certificate is held against (a store's ClusterRecord is one). */
export interface Registration {
  name: string;
  uid: string;
  createdAt: string;
}

/** Why `cert` does not belong to the current registration `record` of its name, or undefined when it does. */
export function foreignIncarnation(cert: CertificateIncarnation, record: Registration): string | undefined {
  if (cert.incarnation !== undefined) {
    return cert.incarnation === record.uid
      ? undefined
      : `its certificate was issued for an earlier registration of cluster "${record.name}"`;
  }
  const created = Date.parse(record.createdAt);
  return cert.certIssuedAt.getTime() + ISSUED_AT_GRANULARITY_MS >= created
    ? undefined
    : `its certificate predates the registration of cluster "${record.name}" (${record.createdAt})`;
}
