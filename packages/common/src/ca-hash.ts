// The pin of a CA certificate, as `tether-server cluster add` prints it and the
// agent checks it before it sends a join token.
import { createHash, X509Certificate } from "node:crypto";

/** "sha256:<hex>" of the certificate's SubjectPublicKeyInfo (DER). */
export function caHashOf(certPem: string): string {
  const spki = new X509Certificate(certPem).publicKey.export({ type: "spki", format: "der" });
  return `sha256:${createHash("sha256").update(spki).digest("hex")}`;
}
