// identityFromCertificate: only unambiguous Tether-issued client certificates map to an identity.
import "reflect-metadata";
import { createPrivateKey, webcrypto, X509Certificate } from "node:crypto";
import * as x509 from "@peculiar/x509";
import t from "tap";
import { identityFromCertificate, identityFromPeerCertificate } from "../../src/pki/identity.js";
import { CertificateAuthority } from "../../src/pki/pki.js";

x509.cryptoProvider.set(webcrypto as unknown as Crypto);
const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
const ca = await CertificateAuthority.create();
const UID = "3f1c2b7e-9a41-4c1e-8d2f-0b5e6a7c8d9e";

/** Signs an arbitrary leaf with the CA's key, to build certificates the CA's API would never issue. */
async function craft(
  subject: x509.JsonName,
  sans: x509.JsonGeneralName[],
  eku = x509.ExtendedKeyUsage.clientAuth,
) {
  const caKey = await webcrypto.subtle.importKey(
    "pkcs8",
    createPrivateKey(ca.keyPem()).export({ type: "pkcs8", format: "der" }),
    alg,
    false,
    ["sign"],
  );
  const keys = (await webcrypto.subtle.generateKey(alg, true, [
    "sign",
    "verify",
  ])) as unknown as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: "01020304",
    subject,
    issuer: new x509.X509Certificate(ca.certPem).subjectName,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 3_600_000),
    signingAlgorithm: alg,
    publicKey: keys.publicKey,
    signingKey: caKey as unknown as CryptoKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.ExtendedKeyUsageExtension([eku]),
      ...(sans.length > 0 ? [new x509.SubjectAlternativeNameExtension(sans)] : []),
    ],
  });
  return new X509Certificate(cert.toString("pem"));
}

t.test("cluster certificate", async (t) => {
  const issued = await ca.issueClusterCertificate("member-7");
  const cert = new X509Certificate(issued.certPem);
  t.same(identityFromCertificate(cert), { kind: "cluster", cluster: "member-7", serial: issued.serial });
  t.same(identityFromCertificate({ raw: cert.raw }), {
    kind: "cluster",
    cluster: "member-7",
    serial: issued.serial,
  });
  t.same(identityFromPeerCertificate({ raw: cert.raw } as never), identityFromCertificate(cert));
});

t.test("user certificate: user and groups; URL-encoded names round-trip", async (t) => {
  for (const [user, groups] of [
    ["alice", ["dev", "ops"]],
    ["alice@example.com", []],
    ["system:serviceaccount:ns:sa", ["system:serviceaccounts"]],
    ["Zoë / 日本", ["a,b", "c=d"]],
  ] as [string, string[]][]) {
    const issued = await ca.issueUserCertificate(user, groups);
    t.same(identityFromCertificate(new X509Certificate(issued.certPem)), {
      kind: "user",
      user,
      groups,
      serial: issued.serial,
    });
  }
});

t.test("no identity for other certificates", async (t) => {
  t.equal(identityFromCertificate(new X509Certificate(ca.certPem)), undefined, "the CA");
  const server = await ca.issueServerCertificate({ dnsNames: ["localhost"], ips: [] });
  t.equal(identityFromCertificate(new X509Certificate(server.certPem)), undefined, "a server certificate");
  t.equal(identityFromPeerCertificate(undefined), undefined);
  t.equal(identityFromPeerCertificate({} as never), undefined, "getPeerCertificate() without a certificate");
  t.equal(identityFromCertificate({ raw: Buffer.from("junk") }), undefined);
});

t.test("ambiguous or inconsistent certificates give no identity", async (t) => {
  const cases: [string, x509.JsonName, x509.JsonGeneralName[], x509.ExtendedKeyUsage?][] = [
    ["no SAN", [{ CN: ["cluster:a"] }], []],
    ["no tether URI", [{ CN: ["cluster:a"] }], [{ type: "url", value: "https://cluster/a" }]],
    [
      "two tether URIs",
      [{ CN: ["cluster:a"] }],
      [
        { type: "url", value: "tether://cluster/a" },
        { type: "url", value: "tether://cluster/b" },
      ],
    ],
    [
      "cluster and user URIs",
      [{ CN: ["a"] }],
      [
        { type: "url", value: "tether://cluster/a" },
        { type: "url", value: "tether://user/a" },
      ],
    ],
    ["CN disagrees with the URI", [{ CN: ["cluster:b"] }], [{ type: "url", value: "tether://cluster/a" }]],
    ["invalid cluster name", [{ CN: ["cluster:A_B"] }], [{ type: "url", value: "tether://cluster/A_B" }]],
    ["unknown kind", [{ CN: ["a"] }], [{ type: "url", value: "tether://admin/a" }]],
    ["user CN mismatch", [{ CN: ["root"] }], [{ type: "url", value: "tether://user/alice" }]],
    ["bad encoding", [{ CN: ["a%"] }], [{ type: "url", value: "tether://user/a%" }]],
    ["empty user", [{ CN: [""] }], [{ type: "url", value: "tether://user/" }]],
    ...(
      [
        ["incarnation not a UUID", "tether://cluster/a/not-a-uuid"],
        ["incarnation in capitals", `tether://cluster/a/${UID.toUpperCase()}`],
        ["two incarnations", `tether://cluster/a/${UID}/${UID}`],
        ["empty incarnation", "tether://cluster/a/"],
        ["a query after the name", `tether://cluster/a?uid=${UID}`],
        ["a query after the incarnation", `tether://cluster/a/${UID}?x`],
        ["the incarnation where the name goes", `tether://cluster/${UID}`],
      ] as const
    ).map(
      ([what, uri]) =>
        [what, [{ CN: ["cluster:a"] }], [{ type: "url", value: uri }]] as (typeof cases)[number],
    ),
    [
      "serverAuth only",
      [{ CN: ["cluster:a"] }],
      [{ type: "url", value: "tether://cluster/a" }],
      x509.ExtendedKeyUsage.serverAuth,
    ],
  ];
  for (const [name, subject, sans, eku] of cases) {
    t.equal(identityFromCertificate(await craft(subject, sans, eku)), undefined, name);
  }
  // The crafted certificates do work when consistent: the checks above are what refused them.
  t.same(
    identityFromCertificate(
      await craft([{ CN: ["cluster:a"] }], [{ type: "url", value: "tether://cluster/a" }]),
    ),
    {
      kind: "cluster",
      cluster: "a",
      serial: "01020304",
    },
  );
  t.same(
    identityFromCertificate(
      await craft([{ CN: ["cluster:a"] }], [{ type: "url", value: `tether://cluster/a/${UID}` }]),
    ),
    { kind: "cluster", cluster: "a", incarnation: UID, serial: "01020304" },
  );
});

t.test(
  "a cluster certificate with an incarnation names it; the agent still reads its cluster from the CN",
  async (t) => {
    const issued = await ca.issueClusterCertificate("member-7", { incarnation: UID });
    const cert = new X509Certificate(issued.certPem);
    t.same(identityFromCertificate(cert), {
      kind: "cluster",
      cluster: "member-7",
      incarnation: UID,
      serial: issued.serial,
    });
    t.match(cert.subject, /^CN=cluster:member-7$/m);
    t.match(cert.subjectAltName, `URI:tether://cluster/member-7/${UID}`);
    await t.rejects(ca.issueClusterCertificate("member-7", { incarnation: "x" }), {
      code: "ERR_TETHER_INVALID_CERT_REQUEST",
    });
  },
);

t.test("replica certificate: serves and dials, names one replica", async (t) => {
  const issued = await ca.issueReplicaCertificate("tether-server-7d9f8-abcde");
  const cert = new X509Certificate(issued.certPem);
  t.same(identityFromCertificate(cert), {
    kind: "replica",
    replica: "tether-server-7d9f8-abcde",
    serial: issued.serial,
  });
  const eku = new x509.X509Certificate(issued.certPem).getExtension(x509.ExtendedKeyUsageExtension);
  t.same(
    [...(eku?.usages ?? [])].sort(),
    [x509.ExtendedKeyUsage.clientAuth, x509.ExtendedKeyUsage.serverAuth].sort(),
    "serverAuth for its listener, clientAuth to dial the others",
  );
  await t.rejects(ca.issueReplicaCertificate("Not_A_Label"), { code: "ERR_TETHER_INVALID_CERT_REQUEST" });
  const mismatched = await craft([{ CN: ["replica:a"] }], [{ type: "url", value: "tether://replica/b" }]);
  t.equal(identityFromCertificate(mismatched), undefined, "CN and URI must name the same replica");
  const bad = await craft([{ CN: ["replica:a/b"] }], [{ type: "url", value: "tether://replica/a/b" }]);
  t.equal(identityFromCertificate(bad), undefined, "a replica id is one DNS label");
});
