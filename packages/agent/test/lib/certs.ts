// Test certificates: a CA, serving certificates for a fake apiserver on
// 127.0.0.1 and Tether-style cluster certificates (CN=cluster:<name>) with
// chosen lifetimes, made with the same library the agent uses for its CSRs.
import { randomBytes, webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";

// biome-ignore lint/suspicious/noExplicitAny: bridging DOM and Node typings
type DomAny = any;
x509.cryptoProvider.set(webcrypto as DomAny);

const EC = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const HOUR = 3600_000;

export interface TestCert {
  certPem: string;
  keyPem: string;
  subject: string;
  privateKey: webcrypto.CryptoKey;
}

export async function makeCert(o: {
  cn: string;
  issuer?: TestCert;
  ca?: boolean;
  ip?: string;
  notBefore?: Date;
  notAfter?: Date;
}): Promise<TestCert> {
  const keys = (await webcrypto.subtle.generateKey(EC, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const subject = `CN=${o.cn}`;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomBytes(8)
      .toString("hex")
      .replace(/^[89a-f]/, "1"),
    subject,
    issuer: o.issuer?.subject ?? subject,
    notBefore: o.notBefore ?? new Date(Date.now() - HOUR),
    notAfter: o.notAfter ?? new Date(Date.now() + 24 * HOUR),
    signingAlgorithm: EC,
    publicKey: keys.publicKey as DomAny,
    signingKey: (o.issuer?.privateKey ?? keys.privateKey) as DomAny,
    extensions: [
      new x509.BasicConstraintsExtension(o.ca ?? false, undefined, true),
      ...(o.ip ? [new x509.SubjectAlternativeNameExtension([{ type: "ip", value: o.ip }])] : []),
    ],
  });
  const pkcs8 = await webcrypto.subtle.exportKey("pkcs8", keys.privateKey);
  return {
    certPem: cert.toString("pem"),
    keyPem: x509.PemConverter.encode(pkcs8, "PRIVATE KEY"),
    subject,
    privateKey: keys.privateKey,
  };
}
