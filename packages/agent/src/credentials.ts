// The agent's identity: its private key (generated here, never sent
// anywhere), the certificate the server issued for it and the server's CA.
// Kept as one file in a state directory, written atomically and 0600, so a
// kill -9 mid-renewal leaves the previous, matching key and certificate.
import "reflect-metadata";
import { createPrivateKey, webcrypto, X509Certificate } from "node:crypto";
import { constants } from "node:fs";
import { access, mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";
import { TetherError, writeFileAtomic } from "@tether/common";

// @peculiar's types name the DOM's Crypto; Node's WebCrypto is the same API.
// biome-ignore lint/suspicious/noExplicitAny: bridging DOM and Node typings
type DomAny = any;
x509.cryptoProvider.set(webcrypto as DomAny);

const EC = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;

export interface Credentials {
  caPem: string;
  certPem: string;
  keyPem: string;
}

export class CredentialsError extends TetherError {
  override name = "CredentialsError";
}

/** A fresh EC P-256 key and a CSR for it naming the cluster (the server decides what the certificate says). */
export async function keyAndCsr(cluster: string): Promise<{ keyPem: string; csrPem: string }> {
  const keys = (await webcrypto.subtle.generateKey(EC, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{ CN: [`cluster:${cluster}`] }],
    keys: keys as DomAny,
    signingAlgorithm: EC,
  });
  const pkcs8 = await webcrypto.subtle.exportKey("pkcs8", keys.privateKey);
  return { keyPem: x509.PemConverter.encode(pkcs8, "PRIVATE KEY"), csrPem: csr.toString("pem") };
}

/**
 * When to renew: after 60% of the remaining lifetime, so a fresh certificate
 * is renewed before 2/3 of its life has passed. (notBefore is backdated for
 * clock skew, so it says nothing about when the certificate was issued.)
 */
export function renewalDelayMs(certPem: string, now = Date.now()): number {
  const remaining = Date.parse(new X509Certificate(certPem).validTo) - now;
  return Math.max(0, Math.floor(remaining * 0.6));
}

export const CREDENTIALS_FILE = "agent-credentials.json";

/** Where the agent keeps its identity between runs: a state directory or a Secret. */
export interface CredentialStore {
  /** For messages: a path or "Secret ns/name". */
  readonly where: string;
  /** The saved credentials; undefined before the first join. Unreadable contents throw ERR_TETHER_AGENT_STATE_CORRUPT. */
  load(): Promise<Credentials | undefined>;
  /** Fails, changing nothing, when save() would: checked before a join spends its one-time token. */
  checkWritable(): Promise<void>;
  /** Replaces the saved credentials in one step. */
  save(creds: Credentials): Promise<void>;
}

/** Credentials on disk: one JSON file holding the CA, certificate and key. */
export class CredentialsDir implements CredentialStore {
  constructor(readonly dir: string) {}

  get path(): string {
    return join(this.dir, CREDENTIALS_FILE);
  }

  get where(): string {
    return this.path;
  }

  async load(): Promise<Credentials | undefined> {
    let text: string;
    try {
      text = await readFile(this.path, "utf8");
    } catch {
      return undefined;
    }
    try {
      const c = JSON.parse(text) as Partial<Credentials>;
      if (typeof c.caPem === "string" && typeof c.certPem === "string" && typeof c.keyPem === "string") {
        return { caPem: c.caPem, certPem: c.certPem, keyPem: c.keyPem };
      }
    } catch {}
    throw new CredentialsError(
      "ERR_TETHER_AGENT_STATE_CORRUPT",
      `${this.path} is not valid agent credentials; remove it and join again with a new token`,
    );
  }

  async checkWritable(): Promise<void> {
    await this.writing(async () => {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      await access(this.dir, constants.W_OK);
    });
  }

  async save(creds: Credentials): Promise<void> {
    await this.writing(async () => {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      await writeFileAtomic(this.path, JSON.stringify(creds), 0o600);
    });
  }

  private async writing(step: () => Promise<void>): Promise<void> {
    try {
      await step();
    } catch (err) {
      throw new CredentialsError(
        "ERR_TETHER_AGENT_STATE_DIR",
        `cannot write the agent's credentials to ${this.dir}: ${(err as Error).message}; point --state-dir at a writable directory`,
      );
    }
  }
}

/** The cluster a Tether cluster certificate names (its CN is "cluster:<name>"). */
export function clusterOf(certPem: string): string {
  const cn = /(?:^|\n)CN=cluster:([a-z0-9-]+)(?:\n|$)/.exec(new X509Certificate(certPem).subject)?.[1];
  if (!cn)
    throw new CredentialsError("ERR_TETHER_AGENT_CERT", "the agent certificate does not name a cluster");
  return cn;
}

/** True when the key belongs to the certificate. */
export function keyMatches(certPem: string, keyPem: string): boolean {
  try {
    return new X509Certificate(certPem).checkPrivateKey(createPrivateKey(keyPem));
  } catch {
    return false;
  }
}
