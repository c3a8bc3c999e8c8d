// Tether's CA: certificates are checked with Node's own X509Certificate and a
// real TLS handshake, never with @peculiar (which only builds them here).
import "reflect-metadata";
import { createPublicKey, webcrypto, X509Certificate } from "node:crypto";
import type { AddressInfo } from "node:net";
import * as tls from "node:tls";
import { inspect } from "node:util";
import * as x509 from "@peculiar/x509";
import { caHashOf } from "@tether/common";
import t from "tap";
import { identityFromPeerCertificate } from "../../src/pki/identity.js";
import {
  CertificateAuthority,
  csrPublicKey,
  type KeyPairPem,
  validateClusterName,
} from "../../src/pki/pki.js";

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const OID_SERVER_AUTH = "1.3.6.1.5.5.7.3.1";
const OID_CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";
const spki = (pem: string) => createPublicKey(pem).export({ type: "spki", format: "der" });

function lifetimeMs(cert: X509Certificate): number {
  return Date.parse(cert.validTo) - Date.parse(cert.validFrom);
}

const ca = await CertificateAuthority.create();
const other = await CertificateAuthority.create("other-ca");

t.test("CA certificate: self-signed CA, pathLen 0, keyCertSign", async (t) => {
  const c = new X509Certificate(ca.certPem);
  t.ok(c.ca);
  t.ok(c.verify(c.publicKey), "self-signed");
  t.ok(c.checkIssued(c));
  t.match(c.subject, /CN=tether-ca/);
  t.equal(c.publicKey.asymmetricKeyDetails?.namedCurve, "prime256v1");
  const p = new x509.X509Certificate(c.raw);
  const bc = p.getExtension(x509.BasicConstraintsExtension)!;
  t.ok(bc.ca);
  t.equal(bc.pathLength, 0);
  t.ok(bc.critical);
  const ku = p.getExtension(x509.KeyUsagesExtension)!;
  t.equal(ku.usages, x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);
  t.ok(ku.critical);
  t.ok(p.getExtension(x509.SubjectKeyIdentifierExtension));
  t.match(ca.keyPem(), /^-----BEGIN PRIVATE KEY-----/);
});

t.test("the CA private key is not exposed by inspection or JSON", async (t) => {
  t.notMatch(inspect(ca, { depth: 5, showHidden: true }), /PRIVATE KEY/);
  t.notMatch(JSON.stringify(ca), /PRIVATE KEY/);
});

t.test("caHash: sha256 of the SPKI, same from caHashOf, different for another CA", async (t) => {
  t.match(ca.caHash, /^sha256:[0-9a-f]{64}$/);
  t.equal(caHashOf(ca.certPem), ca.caHash);
  t.not(other.caHash, ca.caHash);
  t.equal(caHashOf(other.certPem), other.caHash);
  const { createHash } = await import("node:crypto");
  const expected = createHash("sha256").update(spki(ca.certPem)).digest("hex");
  t.equal(ca.caHash, `sha256:${expected}`);
});

t.test("load() round-trips and refuses mismatched or non-CA material", async (t) => {
  const loaded = await CertificateAuthority.load(ca.certPem, ca.keyPem());
  t.equal(loaded.caHash, ca.caHash);
  t.equal(loaded.keyPem(), ca.keyPem());
  const leaf = await loaded.issueClusterCertificate("loaded");
  t.ok(new X509Certificate(leaf.certPem).verify(new X509Certificate(ca.certPem).publicKey));
  await t.rejects(CertificateAuthority.load(ca.certPem, other.keyPem()), { code: "ERR_TETHER_BAD_CA" });
  await t.rejects(CertificateAuthority.load("garbage", ca.keyPem()), { code: "ERR_TETHER_BAD_CA" });
  await t.rejects(CertificateAuthority.load(leaf.certPem, leaf.keyPem!), { code: "ERR_TETHER_BAD_CA" });
  const err = await CertificateAuthority.load(
    ca.certPem,
    "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
  ).catch((e: Error) => e);
  t.match(err, { code: "ERR_TETHER_BAD_CA" });
  t.notMatch(String((err as Error).message), /AAAA/, "no key material in the message");
});

t.test("server certificate: serverAuth, SANs, issued by the CA, 90 days", async (t) => {
  const s = await ca.issueServerCertificate({
    dnsNames: ["tether.example.com", "localhost"],
    ips: ["127.0.0.1", "::1"],
  });
  const c = new X509Certificate(s.certPem);
  const caCert = new X509Certificate(ca.certPem);
  t.ok(c.verify(caCert.publicKey));
  t.ok(c.checkIssued(caCert));
  t.notOk(c.verify(new X509Certificate(other.certPem).publicKey));
  t.notOk(c.ca);
  t.same(c.keyUsage, [OID_SERVER_AUTH]);
  t.match(c.subjectAltName, /DNS:tether.example.com/);
  t.match(c.subjectAltName, /DNS:localhost/);
  t.match(c.subjectAltName, /IP Address:127.0.0.1/);
  t.ok(c.checkHost("tether.example.com"));
  t.ok(c.checkIP("::1"));
  t.match(s.keyPem, /^-----BEGIN PRIVATE KEY-----/);
  t.equal(lifetimeMs(c), 90 * 86400_000 + 5 * 60_000, "90 days + 5 minutes of clock skew");
  const p = new x509.X509Certificate(c.raw);
  t.equal(p.getExtension(x509.KeyUsagesExtension)!.usages, x509.KeyUsageFlags.digitalSignature);
  t.notOk(p.getExtension(x509.BasicConstraintsExtension)!.ca);
  t.ok(p.getExtension(x509.AuthorityKeyIdentifierExtension));
  await t.rejects(ca.issueServerCertificate({ dnsNames: [], ips: [] }), {
    code: "ERR_TETHER_INVALID_CERT_REQUEST",
  });
  await t.rejects(ca.issueServerCertificate({ dnsNames: ["bad name"], ips: [] }), {
    code: "ERR_TETHER_INVALID_CERT_REQUEST",
  });
  await t.rejects(ca.issueServerCertificate({ dnsNames: [], ips: ["1.2.3"] }), {
    code: "ERR_TETHER_INVALID_CERT_REQUEST",
  });
});

t.test("cluster certificate: clientAuth, CN cluster:<name>, URI SAN, serial, 7 days", async (t) => {
  const issued = await ca.issueClusterCertificate("prod-eu-1");
  const c = new X509Certificate(issued.certPem);
  t.ok(c.verify(new X509Certificate(ca.certPem).publicKey));
  t.ok(c.checkIssued(new X509Certificate(ca.certPem)));
  t.same(c.keyUsage, [OID_CLIENT_AUTH]);
  t.match(c.subject, /^CN=cluster:prod-eu-1$/);
  t.equal(c.subjectAltName, "URI:tether://cluster/prod-eu-1");
  t.equal(issued.serial, c.serialNumber.toLowerCase());
  t.match(issued.serial, /^[0-7][0-9a-f]{31}$/, "positive 16-byte serial");
  t.equal(issued.notAfter.getTime(), Date.parse(c.validTo));
  t.equal(lifetimeMs(c), 7 * 86400_000 + 5 * 60_000);
  t.ok(c.checkPrivateKey((await import("node:crypto")).createPrivateKey(issued.keyPem!)));
  const short = await ca.issueClusterCertificate("prod-eu-1", { ttlMs: 3_600_000 });
  t.equal(lifetimeMs(new X509Certificate(short.certPem)), 3_600_000 + 5 * 60_000);
  t.not(short.serial, issued.serial);
  await t.rejects(ca.issueClusterCertificate("x", { ttlMs: 0 }), { code: "ERR_TETHER_INVALID_CERT_REQUEST" });
});

t.test("user certificate: CN user, one O per group, encoded URI SAN, 24 hours", async (t) => {
  const issued = await ca.issueUserCertificate("alice@example.com", ["dev", "ops team"]);
  const c = new X509Certificate(issued.certPem);
  t.ok(c.verify(new X509Certificate(ca.certPem).publicKey));
  t.same(c.keyUsage, [OID_CLIENT_AUTH]);
  t.match(c.subject, /CN=alice@example.com/);
  t.same(new x509.X509Certificate(c.raw).subjectName.getField("O"), ["dev", "ops team"]);
  t.equal(c.subjectAltName, "URI:tether://user/alice%40example.com");
  t.equal(lifetimeMs(c), 86400_000 + 5 * 60_000);
  await t.rejects(ca.issueUserCertificate("", []), { code: "ERR_TETHER_INVALID_CERT_REQUEST" });
  await t.rejects(ca.issueUserCertificate("bob\n", []), { code: "ERR_TETHER_INVALID_CERT_REQUEST" });
  await t.rejects(ca.issueUserCertificate("bob", ["ok", ""]), { code: "ERR_TETHER_INVALID_CERT_REQUEST" });
});

t.test("a leaf never outlives its CA", async (t) => {
  const issued = await ca.issueClusterCertificate("long", { ttlMs: 100 * 365 * 86400_000 });
  t.equal(issued.notAfter.getTime(), ca.notAfter.getTime());
});

t.test("cluster names must be DNS-1123 labels", async (t) => {
  for (const ok of ["a", "prod", "prod-eu-1", "0", "a".repeat(63), "1a-b2"]) {
    t.doesNotThrow(() => validateClusterName(ok), ok);
  }
  for (const bad of ["", "-a", "a-", "Prod", "a_b", "a.b", "a".repeat(64), "a b", "../x", "a/b", "é"]) {
    t.throws(
      () => validateClusterName(bad),
      { code: "ERR_TETHER_INVALID_CLUSTER_NAME", message: /DNS-1123/ },
      bad,
    );
    await t.rejects(ca.issueClusterCertificate(bad), { code: "ERR_TETHER_INVALID_CLUSTER_NAME" }, bad);
  }
});

t.test("CSR flow: the certificate carries the CSR's key; the CSR's names are ignored", async (t) => {
  const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const keys = (await webcrypto.subtle.generateKey(alg, true, [
    "sign",
    "verify",
  ])) as unknown as CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: "CN=cluster:evil, O=system:masters",
    keys,
    signingAlgorithm: alg,
  });
  const publicKeyPem = await csrPublicKey(csr.toString("pem"));
  const csrSpki = Buffer.from(
    await webcrypto.subtle.exportKey("spki", keys.publicKey as unknown as webcrypto.CryptoKey),
  );
  t.ok(spki(publicKeyPem).equals(csrSpki));
  const issued = await ca.issueClusterCertificate("good", { publicKeyPem });
  t.equal(issued.keyPem, undefined, "no key generated or returned");
  const c = new X509Certificate(issued.certPem);
  t.ok(spki(issued.certPem).equals(csrSpki), "certificate public key = CSR public key");
  t.equal(c.subject, "CN=cluster:good");
  t.ok(c.verify(new X509Certificate(ca.certPem).publicKey));
});

t.test("csrPublicKey refuses garbage, tampered CSRs and unsupported keys", async (t) => {
  await t.rejects(csrPublicKey("nope"), { code: "ERR_TETHER_BAD_CSR" });
  await t.rejects(csrPublicKey(ca.certPem), { code: "ERR_TETHER_BAD_CSR" });
  const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const keys = (await webcrypto.subtle.generateKey(alg, true, [
    "sign",
    "verify",
  ])) as unknown as CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: "CN=x",
    keys,
    signingAlgorithm: alg,
  });
  // Swap in another key: the signature no longer matches.
  const keys2 = (await webcrypto.subtle.generateKey(alg, true, [
    "sign",
    "verify",
  ])) as unknown as CryptoKeyPair;
  const csr2 = await x509.Pkcs10CertificateRequestGenerator.create({
    name: "CN=x",
    keys: keys2,
    signingAlgorithm: alg,
  });
  const der = Buffer.from(csr.rawData);
  const pk1 = Buffer.from(csr.publicKey.rawData);
  const pk2 = Buffer.from(csr2.publicKey.rawData);
  const at = der.indexOf(pk1);
  t.ok(at > 0);
  pk2.copy(der, at);
  const tampered = x509.PemConverter.encode(der, "CERTIFICATE REQUEST");
  await t.rejects(csrPublicKey(tampered), { code: "ERR_TETHER_BAD_CSR", message: /signature/ });
  // P-384 key: a valid CSR, but not a key type Tether issues for.
  const alg384 = { name: "ECDSA", namedCurve: "P-384", hash: "SHA-384" };
  const k384 = (await webcrypto.subtle.generateKey(alg384, true, [
    "sign",
    "verify",
  ])) as unknown as CryptoKeyPair;
  const csr384 = await x509.Pkcs10CertificateRequestGenerator.create({
    name: "CN=x",
    keys: k384,
    signingAlgorithm: alg384,
  });
  await t.rejects(csrPublicKey(csr384.toString("pem")), { code: "ERR_TETHER_BAD_CSR", message: /P-256/ });
  await t.rejects(ca.issueClusterCertificate("x", { publicKeyPem: "junk" }), { code: "ERR_TETHER_BAD_CSR" });
});

// --- a real mutual-TLS handshake -------------------------------------------------------------

type Identity = ReturnType<typeof identityFromPeerCertificate>;

/** Connects a TLS client to a server requiring client certificates from `ca`; the server's verdict decides. */
async function handshake(
  server: KeyPairPem,
  client: KeyPairPem,
): Promise<{ ok: boolean; identity?: Identity; error?: string }> {
  const srv = tls.createServer({
    cert: server.certPem,
    key: server.keyPem,
    ca: [ca.certPem],
    requestCert: true,
    rejectUnauthorized: true,
  });
  const verdict = new Promise<{ ok: boolean; identity?: Identity; error?: string }>((resolve) => {
    srv.on("secureConnection", (sock) => {
      resolve({ ok: true, identity: identityFromPeerCertificate(sock.getPeerCertificate(true)) });
      sock.end();
    });
    srv.on("tlsClientError", (err) => resolve({ ok: false, error: err.message }));
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const { port } = srv.address() as AddressInfo;
  const sock = tls.connect({
    host: "127.0.0.1",
    port,
    servername: "localhost",
    ca: [ca.certPem],
    cert: client.certPem,
    key: client.keyPem,
  });
  sock.on("error", () => {});
  sock.resume();
  try {
    return await verdict;
  } finally {
    sock.destroy();
    srv.close();
  }
}

t.test("mTLS: a cluster certificate from this CA is accepted and identifies the cluster", async (t) => {
  const server = await ca.issueServerCertificate({ dnsNames: ["localhost"], ips: ["127.0.0.1"] });
  const client = await ca.issueClusterCertificate("member-1");
  const r = await handshake(server, client);
  t.ok(r.ok, r.error ?? "handshake");
  t.same(r.identity, { kind: "cluster", cluster: "member-1", serial: client.serial });
});

t.test("mTLS: a user certificate identifies user and groups", async (t) => {
  const server = await ca.issueServerCertificate({ dnsNames: ["localhost"], ips: [] });
  const client = await ca.issueUserCertificate("alice", ["dev", "ops"]);
  const r = await handshake(server, client);
  t.ok(r.ok, r.error ?? "handshake");
  t.same(r.identity, { kind: "user", user: "alice", groups: ["dev", "ops"], serial: client.serial });
});

t.test("mTLS: a certificate from a different CA is refused", async (t) => {
  const server = await ca.issueServerCertificate({ dnsNames: ["localhost"], ips: ["127.0.0.1"] });
  const forged = await other.issueClusterCertificate("member-1");
  const r = await handshake(server, forged);
  t.notOk(r.ok, "handshake refused");
});

t.test("mTLS: a server certificate can't be used as a client certificate", async (t) => {
  const server = await ca.issueServerCertificate({ dnsNames: ["localhost"], ips: ["127.0.0.1"] });
  const wrongUsage = await ca.issueServerCertificate({ dnsNames: ["member-1"], ips: [] });
  const r = await handshake(server, wrongUsage);
  t.notOk(r.ok, "serverAuth-only certificate refused for client auth");
});
