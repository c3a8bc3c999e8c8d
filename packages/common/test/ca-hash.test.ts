import "reflect-metadata";
import { createHash, webcrypto, X509Certificate } from "node:crypto";
import * as x509 from "@peculiar/x509";
import t from "tap";
import { caHashOf } from "../src/ca-hash.js";

const EC = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };

async function selfSigned(keys?: CryptoKeyPair): Promise<{ pem: string; keys: CryptoKeyPair }> {
  const pair = keys ?? ((await webcrypto.subtle.generateKey(EC, true, ["sign", "verify"])) as CryptoKeyPair);
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    { name: "CN=test-ca", keys: pair, signingAlgorithm: EC, notAfter: new Date(Date.now() + 3600_000) },
    webcrypto as unknown as Crypto,
  );
  return { pem: cert.toString("pem"), keys: pair };
}

t.test("the pin is sha256 of the certificate's SubjectPublicKeyInfo", async (t) => {
  const { pem, keys } = await selfSigned();
  const spki = new X509Certificate(pem).publicKey.export({ type: "spki", format: "der" });
  t.equal(caHashOf(pem), `sha256:${createHash("sha256").update(spki).digest("hex")}`);
  const again = await selfSigned(keys);
  t.equal(caHashOf(again.pem), caHashOf(pem), "a certificate reissued for the same key keeps its pin");
  t.not(caHashOf((await selfSigned()).pem), caHashOf(pem), "another key, another pin");
});

t.test("something that is no certificate throws", async (t) => {
  t.throws(() => caHashOf("not a certificate"));
});
