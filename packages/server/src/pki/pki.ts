// Tether's certificate authority: EC P-256 keys from Node's WebCrypto,
// certificates assembled by @peculiar/x509. @peculiar is only used to *build*
// and *parse* certificates and CSRs; every chain verification is left to
// Node's TLS stack and `X509Certificate` (OpenSSL).
//
// Certificates issued here:
//   - the CA itself (pathLen 0: it signs leaves only);
//   - the server's serving certificate (serverAuth);
//   - one client certificate per member cluster agent, CN `cluster:<name>`,
//     URI SAN `tether://cluster/<name>/<incarnation>` (the UID of the
//     cluster's registration, see incarnation.ts; certificates from before
//     incarnations existed lack the last segment), short-lived (7 days by default);
//   - user client certificates, CN `<user>`, O `<group>`…, URI SAN
//     `tether://user/<url-encoded user>` (24 h by default).
// Private keys are never logged; they only leave this module as PKCS#8 PEM
// for the state store, which writes them with mode 0600.
import "reflect-metadata";
import { createPrivateKey, createPublicKey, webcrypto, X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import * as x509 from "@peculiar/x509";
import { caHashOf, codedError } from "@tether/common";

// @peculiar's typings use the DOM's WebCrypto types; the server is compiled
// without the DOM lib, so Node's webcrypto objects are passed through casts.
// biome-ignore lint/suspicious/noExplicitAny: bridging Node's and the DOM's WebCrypto typings
type DomAny = any;
x509.cryptoProvider.set(webcrypto as DomAny);

type CryptoKey = webcrypto.CryptoKey;
interface CryptoKeyPair {
  publicKey: CryptoKey;
  privateKey: CryptoKey;
}

const EC_P256 = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGNING = { name: "ECDSA", hash: "SHA-256" } as const;

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;
/** Leaves are valid from this long before issuance, for clocks that lag ours. */
export const CLOCK_SKEW_MS = 5 * MINUTE;
export const CA_TTL_MS = 3650 * DAY;
export const SERVER_CERT_TTL_MS = 90 * DAY;
export const CLUSTER_CERT_TTL_MS = 7 * DAY;
export const USER_CERT_TTL_MS = DAY;

export const URI_CLUSTER_PREFIX = "tether://cluster/";
export const URI_USER_PREFIX = "tether://user/";
export const CLUSTER_CN_PREFIX = "cluster:";
export const URI_REPLICA_PREFIX = "tether://replica/";
export const REPLICA_CN_PREFIX = "replica:";
/** Replica certificates are reissued at every start; a day outlives any run between restarts that matters. */
export const REPLICA_CERT_TTL_MS = DAY;

export const ERR_TETHER_INVALID_CLUSTER_NAME = "ERR_TETHER_INVALID_CLUSTER_NAME";
export const ERR_TETHER_BAD_CSR = "ERR_TETHER_BAD_CSR";
export const ERR_TETHER_BAD_CA = "ERR_TETHER_BAD_CA";
export const ERR_TETHER_INVALID_CERT_REQUEST = "ERR_TETHER_INVALID_CERT_REQUEST";

export interface KeyPairPem {
  certPem: string;
  keyPem?: string;
}

export interface IssuedCertificate extends KeyPairPem {
  /** Lowercase hex, as `X509Certificate.serialNumber.toLowerCase()` reports it. */
  serial: string;
  notAfter: Date;
}

const CLUSTER_NAME_RE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** A registration's UID: lowercase RFC 4122 text, as Kubernetes' metadata.uid and crypto.randomUUID() write it. */
const INCARNATION_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Whether `uid` can be a cluster incarnation (lowercase UUID text). */
export function isIncarnation(uid: unknown): uid is string {
  return typeof uid === "string" && INCARNATION_RE.test(uid);
}

/**
 * When a leaf was issued: its notBefore is backdated by CLOCK_SKEW_MS. X.509
 * times have whole seconds, so this is up to 1 s early.
 */
export function issuedAtOf(notBefore: Date): Date {
  return new Date(notBefore.getTime() + CLOCK_SKEW_MS);
}

/** Whether `name` is a valid cluster name (a DNS-1123 label). */
export function isValidClusterName(name: unknown): name is string {
  return typeof name === "string" && CLUSTER_NAME_RE.test(name);
}

/** Throws `ERR_TETHER_INVALID_CLUSTER_NAME` unless `name` is a DNS-1123 label. */
export function validateClusterName(name: string): void {
  if (isValidClusterName(name)) return;
  throw codedError(
    ERR_TETHER_INVALID_CLUSTER_NAME,
    `invalid cluster name ${JSON.stringify(String(name)).slice(0, 80)}: a cluster name must be a DNS-1123 label — ` +
      `1 to 63 characters, lowercase letters, digits and '-', starting and ending with a letter or digit`,
  );
}

/** A random positive 16-byte serial whose DER encoding is exactly those 16 bytes (first byte 0x01–0x7f). */
function newSerial(): string {
  const b = webcrypto.getRandomValues(new Uint8Array(16));
  b[0] = (b[0]! & 0x7f) | 0x01;
  return Buffer.from(b).toString("hex");
}

function pemToDer(pem: string, label: string): Buffer {
  const m = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+)-----END ${label}-----`).exec(pem);
  if (!m) throw new Error(`no ${label} PEM block`);
  return Buffer.from(m[1]!.replace(/\s+/g, ""), "base64");
}

async function generateKeyPair(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(EC_P256, true, ["sign", "verify"])) as CryptoKeyPair;
}

async function exportPrivateKeyPem(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey("pkcs8", key);
  return x509.PemConverter.encode(der, "PRIVATE KEY");
}

/** Imports an SPKI public key PEM; only EC P-256 keys are accepted. */
async function importPublicKey(publicKeyPem: string): Promise<CryptoKey> {
  let key: ReturnType<typeof createPublicKey>;
  try {
    key = createPublicKey(publicKeyPem);
  } catch (err) {
    throw codedError(ERR_TETHER_BAD_CSR, "the public key is not a valid PEM SubjectPublicKeyInfo", err);
  }
  if (key.asymmetricKeyType !== "ec" || key.asymmetricKeyDetails?.namedCurve !== "prime256v1") {
    throw codedError(
      ERR_TETHER_BAD_CSR,
      `unsupported public key (${key.asymmetricKeyType ?? "unknown"}` +
        `${key.asymmetricKeyDetails?.namedCurve ? " " + key.asymmetricKeyDetails.namedCurve : ""}): ` +
        `Tether issues certificates for EC P-256 keys only`,
    );
  }
  const der = key.export({ type: "spki", format: "der" });
  return webcrypto.subtle.importKey("spki", der, EC_P256, true, ["verify"]);
}

function checkTtl(ttlMs: number): void {
  if (!Number.isFinite(ttlMs) || ttlMs <= 0) {
    throw codedError(ERR_TETHER_INVALID_CERT_REQUEST, `certificate lifetime must be a positive number of ms`);
  }
}

// Printable, no control characters: these end up in DNs, SANs and logs.
// biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
const CONTROL_RE = /[\u0000-\u001f\u007f]/;

function checkNameValue(what: string, value: string): void {
  if (typeof value !== "string" || value.length === 0 || value.length > 256 || CONTROL_RE.test(value)) {
    throw codedError(
      ERR_TETHER_INVALID_CERT_REQUEST,
      `${what} must be a non-empty string of at most 256 characters without control characters`,
    );
  }
}

export class CertificateAuthority {
  readonly certPem: string;
  /** "sha256:<hex>" of the CA certificate's SubjectPublicKeyInfo. */
  readonly caHash: string;
  readonly #cert: x509.X509Certificate;
  readonly #privateKey: CryptoKey;
  readonly #keyPem: string;

  private constructor(cert: x509.X509Certificate, certPem: string, privateKey: CryptoKey, keyPem: string) {
    this.#cert = cert;
    this.certPem = certPem;
    this.#privateKey = privateKey;
    this.#keyPem = keyPem;
    this.caHash = caHashOf(certPem);
  }

  /** The CA's validity end. */
  get notAfter(): Date {
    return this.#cert.notAfter;
  }

  /** Generates a new self-signed CA (EC P-256, pathLen 0, 10 years). */
  static async create(commonName = "tether-ca"): Promise<CertificateAuthority> {
    checkNameValue("CA common name", commonName);
    const keys = await generateKeyPair();
    const now = Date.now();
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: newSerial(),
      name: [{ CN: [commonName] }],
      notBefore: new Date(now - CLOCK_SKEW_MS),
      notAfter: new Date(now + CA_TTL_MS),
      signingAlgorithm: SIGNING,
      keys: keys as DomAny,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey as DomAny),
      ],
    });
    const certPem = cert.toString("pem");
    return new CertificateAuthority(
      cert,
      certPem,
      keys.privateKey,
      await exportPrivateKeyPem(keys.privateKey),
    );
  }

  /**
   * Loads a CA from PEM. The certificate must be a CA certificate with an EC
   * P-256 key, and `keyPem` (PKCS#8 or SEC1 "EC PRIVATE KEY") its private key.
   * Throws `ERR_TETHER_BAD_CA` otherwise (the message never contains key material).
   */
  static async load(certPem: string, keyPem: string): Promise<CertificateAuthority> {
    let nodeCert: X509Certificate;
    let cert: x509.X509Certificate;
    try {
      nodeCert = new X509Certificate(certPem);
      cert = new x509.X509Certificate(nodeCert.raw);
    } catch (err) {
      throw codedError(ERR_TETHER_BAD_CA, "the CA certificate is not a valid PEM X.509 certificate", err);
    }
    if (!nodeCert.ca)
      throw codedError(ERR_TETHER_BAD_CA, "the CA certificate is not a CA (BasicConstraints CA:false)");
    let nodeKey: ReturnType<typeof createPrivateKey>;
    try {
      nodeKey = createPrivateKey(keyPem);
    } catch (err) {
      // The cause would quote OpenSSL, never the key; still, keep it out of the chain.
      void err;
      throw codedError(ERR_TETHER_BAD_CA, "the CA private key is not a valid PEM private key");
    }
    if (nodeKey.asymmetricKeyType !== "ec" || nodeKey.asymmetricKeyDetails?.namedCurve !== "prime256v1") {
      throw codedError(ERR_TETHER_BAD_CA, "the CA private key must be an EC P-256 key");
    }
    const certSpki = nodeCert.publicKey.export({ type: "spki", format: "der" });
    const keySpki = createPublicKey(nodeKey).export({ type: "spki", format: "der" });
    if (!certSpki.equals(keySpki)) {
      throw codedError(ERR_TETHER_BAD_CA, "the CA private key does not match the CA certificate");
    }
    const pkcs8 = nodeKey.export({ type: "pkcs8", format: "der" });
    const privateKey = await webcrypto.subtle.importKey("pkcs8", pkcs8, EC_P256, true, ["sign"]);
    const normalizedKeyPem = x509.PemConverter.encode(pkcs8, "PRIVATE KEY");
    return new CertificateAuthority(cert, cert.toString("pem"), privateKey, normalizedKeyPem);
  }

  /** The CA private key as PKCS#8 PEM. For the state store only: never log it. */
  keyPem(): string {
    return this.#keyPem;
  }

  /** Never show the private key when the object is inspected or serialised. */
  toJSON(): { certPem: string; caHash: string } {
    return { certPem: this.certPem, caHash: this.caHash };
  }

  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return `CertificateAuthority { caHash: '${this.caHash}' }`;
  }

  /** A serving certificate for tether-server (serverAuth), 90 days by default. */
  async issueServerCertificate(opts: {
    dnsNames: string[];
    ips: string[];
    ttlMs?: number;
  }): Promise<KeyPairPem> {
    const dnsNames = [...new Set(opts.dnsNames.map((n) => n.toLowerCase()))];
    const ips = [...new Set(opts.ips.map(canonicalIp))];
    for (const n of dnsNames) {
      if (
        !/^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(n) ||
        n.length > 253
      ) {
        throw codedError(ERR_TETHER_INVALID_CERT_REQUEST, `invalid DNS name ${JSON.stringify(n)}`);
      }
    }
    for (const ip of ips) {
      if (isIP(ip) === 0)
        throw codedError(ERR_TETHER_INVALID_CERT_REQUEST, `invalid IP address ${JSON.stringify(ip)}`);
    }
    if (dnsNames.length === 0 && ips.length === 0) {
      throw codedError(
        ERR_TETHER_INVALID_CERT_REQUEST,
        "a serving certificate needs at least one DNS name or IP",
      );
    }
    const keys = await generateKeyPair();
    const { certPem } = await this.#issue({
      commonName: dnsNames[0] ?? ips[0]!,
      organizations: [],
      sans: [
        ...dnsNames.map((value) => ({ type: "dns" as const, value })),
        ...ips.map((value) => ({ type: "ip" as const, value })),
      ],
      usage: "server",
      publicKey: keys.publicKey,
      ttlMs: opts.ttlMs ?? SERVER_CERT_TTL_MS,
    });
    return { certPem, keyPem: await exportPrivateKeyPem(keys.privateKey) };
  }

  /**
   * A client certificate for the agent of member cluster `cluster` (clientAuth),
   * 7 days by default. With `publicKeyPem` (an EC P-256 SPKI PEM, e.g. from
   * {@link csrPublicKey}) the certificate is issued for that key and no
   * `keyPem` is returned; otherwise a key pair is generated and returned.
   * `incarnation` (the registration's UID) goes into the URI SAN; without it
   * the certificate has the pre-incarnation form, which only tests still make.
   */
  async issueClusterCertificate(
    cluster: string,
    opts: { ttlMs?: number; publicKeyPem?: string; incarnation?: string } = {},
  ): Promise<IssuedCertificate> {
    validateClusterName(cluster);
    if (opts.incarnation !== undefined && !isIncarnation(opts.incarnation)) {
      throw codedError(ERR_TETHER_INVALID_CERT_REQUEST, "a cluster incarnation must be a lowercase UUID");
    }
    return this.#issueClient(
      {
        commonName: CLUSTER_CN_PREFIX + cluster,
        organizations: [],
        uri: URI_CLUSTER_PREFIX + cluster + (opts.incarnation === undefined ? "" : `/${opts.incarnation}`),
        ttlMs: opts.ttlMs ?? CLUSTER_CERT_TTL_MS,
      },
      opts.publicKeyPem,
    );
  }

  /** A client certificate for a host-side user (clientAuth), 24 hours by default. */
  async issueUserCertificate(
    user: string,
    groups: string[],
    opts: { ttlMs?: number } = {},
  ): Promise<IssuedCertificate> {
    checkNameValue("user name", user);
    for (const g of groups) checkNameValue("group name", g);
    return this.#issueClient({
      commonName: user,
      organizations: [...new Set(groups)],
      uri: URI_USER_PREFIX + encodeURIComponent(user),
      ttlMs: opts.ttlMs ?? USER_CERT_TTL_MS,
    });
  }

  /**
   * The identity of one tether-server replica towards the others
   * (proxy/replica-hop.ts): CN `replica:<id>`, URI SAN `tether://replica/<id>`,
   * serverAuth and clientAuth — the same certificate serves the replica
   * listener and dials the other replicas'.
   */
  async issueReplicaCertificate(id: string, opts: { ttlMs?: number } = {}): Promise<IssuedCertificate> {
    if (!isValidClusterName(id)) {
      throw codedError(
        ERR_TETHER_INVALID_CERT_REQUEST,
        "a replica id must be a DNS-1123 label (a pod name is one)",
      );
    }
    return this.#issueClient(
      {
        commonName: REPLICA_CN_PREFIX + id,
        organizations: [],
        uri: URI_REPLICA_PREFIX + id,
        ttlMs: opts.ttlMs ?? REPLICA_CERT_TTL_MS,
      },
      undefined,
      "replica",
    );
  }

  async #issueClient(
    spec: { commonName: string; organizations: string[]; uri: string; ttlMs: number },
    publicKeyPem?: string,
    usage: "client" | "replica" = "client",
  ): Promise<IssuedCertificate> {
    checkTtl(spec.ttlMs);
    let keys: CryptoKeyPair | undefined;
    let publicKey: CryptoKey;
    if (publicKeyPem === undefined) {
      keys = await generateKeyPair();
      publicKey = keys.publicKey;
    } else {
      publicKey = await importPublicKey(publicKeyPem);
    }
    const issued = await this.#issue({
      commonName: spec.commonName,
      organizations: spec.organizations,
      sans: [{ type: "url", value: spec.uri }],
      usage,
      publicKey,
      ttlMs: spec.ttlMs,
    });
    return keys ? { ...issued, keyPem: await exportPrivateKeyPem(keys.privateKey) } : issued;
  }

  async #issue(spec: {
    commonName: string;
    organizations: string[];
    sans: x509.JsonGeneralName[];
    usage: "server" | "client" | "replica";
    publicKey: CryptoKey;
    ttlMs: number;
  }): Promise<IssuedCertificate> {
    checkTtl(spec.ttlMs);
    const now = Date.now();
    // A leaf never outlives its CA.
    const notAfter = new Date(Math.min(now + spec.ttlMs, this.#cert.notAfter.getTime()));
    const serial = newSerial();
    const subject: x509.JsonName = [{ CN: [spec.commonName] }];
    for (const o of spec.organizations) subject.push({ O: [o] });
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial,
      subject,
      issuer: this.#cert.subjectName,
      notBefore: new Date(now - CLOCK_SKEW_MS),
      notAfter,
      signingAlgorithm: SIGNING,
      publicKey: spec.publicKey as DomAny,
      signingKey: this.#privateKey as DomAny,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension(
          spec.usage === "replica"
            ? [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]
            : [spec.usage === "server" ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth],
          false,
        ),
        await x509.AuthorityKeyIdentifierExtension.create(this.#cert, false),
        await x509.SubjectKeyIdentifierExtension.create(spec.publicKey as DomAny),
        new x509.SubjectAlternativeNameExtension(spec.sans, false),
      ],
    });
    return { certPem: cert.toString("pem"), serial, notAfter: cert.notAfter };
  }
}

/**
 * Parses a PEM PKCS#10 certificate signing request, checks its self-signature
 * (proof that the requester holds the private key) and returns its public key
 * as SPKI PEM. Throws `ERR_TETHER_BAD_CSR` for anything else. The CSR's
 * subject and extensions are ignored: the CA decides the certificate's names.
 */
export async function csrPublicKey(csrPem: string): Promise<string> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    const der = pemToDer(csrPem, "(?:NEW )?CERTIFICATE REQUEST");
    csr = new x509.Pkcs10CertificateRequest(der);
  } catch (err) {
    throw codedError(ERR_TETHER_BAD_CSR, "not a valid PEM PKCS#10 certificate signing request", err);
  }
  let valid = false;
  try {
    valid = await csr.verify();
  } catch (err) {
    throw codedError(ERR_TETHER_BAD_CSR, "the certificate signing request's signature can't be checked", err);
  }
  if (!valid) throw codedError(ERR_TETHER_BAD_CSR, "the certificate signing request's signature is invalid");
  const pem = x509.PemConverter.encode(csr.publicKey.rawData, "PUBLIC KEY");
  await importPublicKey(pem); // refuses key types Tether doesn't issue for
  return pem;
}

/** The DNS and IP subject alternative names of a certificate (IPs canonicalised as {@link canonicalIp}). */
export function certificateNames(certPem: string): { dnsNames: string[]; ips: string[] } {
  const cert = new x509.X509Certificate(new X509Certificate(certPem).raw);
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  const items = san?.names.items ?? [];
  return {
    dnsNames: items.filter((n) => n.type === "dns").map((n) => n.value.toLowerCase()),
    ips: items.filter((n) => n.type === "ip").map((n) => canonicalIp(n.value)),
  };
}

/** One spelling per address: IPv6 compressed and lowercase (`::1`), IPv4 dotted quad. Non-IPs unchanged. */
export function canonicalIp(ip: string): string {
  const family = isIP(ip);
  if (family === 4) return ip;
  if (family === 6) return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  return ip;
}
