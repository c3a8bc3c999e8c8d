// Who is on the other end of a TLS connection, read from a client certificate
// Tether issued (see pki.ts). This does NOT verify the chain, validity or
// revocation: the TLS handshake (requestCert + rejectUnauthorized against
// Tether's CA) has already done the former; revocation is the caller's job
// (`Store.isRevoked(identity.serial)`).
//
// A certificate maps to an identity only when it is unambiguous: exactly one
// `tether://` URI SAN, of a known kind, whose name agrees with the subject CN,
// and an extended key usage that allows client authentication. A cluster URI
// is `tether://cluster/<name>` or `tether://cluster/<name>/<incarnation>`:
// one name segment that must be a DNS-1123 label, at most one incarnation
// segment that must be a lowercase UUID, nothing else (no query, no fragment).
import "reflect-metadata";
import { X509Certificate } from "node:crypto";
import type { PeerCertificate } from "node:tls";
import * as x509 from "@peculiar/x509";
import {
  CLUSTER_CN_PREFIX,
  isIncarnation,
  isValidClusterName,
  REPLICA_CN_PREFIX,
  URI_CLUSTER_PREFIX,
  URI_REPLICA_PREFIX,
  URI_USER_PREFIX,
} from "./pki.js";

export type PeerIdentity =
  /** `incarnation` is missing only on certificates issued before incarnations existed. */
  | { kind: "cluster"; cluster: string; incarnation?: string; serial: string }
  | { kind: "user"; user: string; groups: string[]; serial: string }
  /** Another tether-server replica (proxy/replica-hop.ts); `replica` is its --replica-id. */
  | { kind: "replica"; replica: string; serial: string };

const OID_CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";
const OID_ANY_EKU = "2.5.29.37.0";

/** The identity in a certificate Tether issued, or undefined when there is none or it is ambiguous. */
export function identityFromCertificate(cert: X509Certificate | { raw: Buffer }): PeerIdentity | undefined {
  const raw = cert.raw;
  if (!Buffer.isBuffer(raw) || raw.length === 0) return undefined;
  let parsed: x509.X509Certificate;
  let serial: string;
  try {
    parsed = new x509.X509Certificate(raw);
    serial = (cert instanceof X509Certificate ? cert : new X509Certificate(raw)).serialNumber.toLowerCase();
  } catch {
    return undefined;
  }
  try {
    const basic = parsed.getExtension(x509.BasicConstraintsExtension);
    if (basic?.ca) return undefined;
    const eku = parsed.getExtension(x509.ExtendedKeyUsageExtension);
    if (eku && !eku.usages.some((u) => u === OID_CLIENT_AUTH || u === OID_ANY_EKU)) return undefined;

    const sans = parsed.getExtensions(x509.SubjectAlternativeNameExtension);
    if (sans.length !== 1) return undefined;
    const tetherUris = sans[0]!.names.items.filter(
      (n) => n.type === "url" && n.value.toLowerCase().startsWith("tether:"),
    );
    if (tetherUris.length !== 1) return undefined;
    const uri = tetherUris[0]!.value;

    const cns = parsed.subjectName.getField("CN");
    if (cns.length !== 1) return undefined;
    const cn = cns[0]!;

    if (uri.startsWith(URI_CLUSTER_PREFIX)) {
      const segments = uri.slice(URI_CLUSTER_PREFIX.length).split("/");
      const [cluster, incarnation] = segments;
      if (segments.length > 2 || !isValidClusterName(cluster) || cn !== CLUSTER_CN_PREFIX + cluster)
        return undefined;
      if (segments.length === 1) return { kind: "cluster", cluster, serial };
      return isIncarnation(incarnation) ? { kind: "cluster", cluster, incarnation, serial } : undefined;
    }
    if (uri.startsWith(URI_REPLICA_PREFIX)) {
      const replica = uri.slice(URI_REPLICA_PREFIX.length);
      if (!isValidClusterName(replica) || cn !== REPLICA_CN_PREFIX + replica) return undefined;
      return { kind: "replica", replica, serial };
    }
    if (uri.startsWith(URI_USER_PREFIX)) {
      const encoded = uri.slice(URI_USER_PREFIX.length);
      let user: string;
      try {
        user = decodeURIComponent(encoded);
      } catch {
        return undefined;
      }
      if (user.length === 0 || encodeURIComponent(user) !== encoded || cn !== user) return undefined;
      const groups = parsed.subjectName.getField("O");
      return { kind: "user", user, groups, serial };
    }
    return undefined;
  } catch {
    return undefined; // malformed extensions: not a certificate we issued
  }
}

/** {@link identityFromCertificate} for `tlsSocket.getPeerCertificate()`; undefined when there is no certificate. */
export function identityFromPeerCertificate(
  peer: PeerCertificate | undefined | null,
): PeerIdentity | undefined {
  if (!peer || !Buffer.isBuffer(peer.raw)) return undefined;
  return identityFromCertificate({ raw: peer.raw });
}
