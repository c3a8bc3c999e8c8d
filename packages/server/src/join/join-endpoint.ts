// How an agent gets and keeps its certificate. Joining is two plain HTTPS
// requests: GET the CA certificate (public; the agent checks it against the
// pinned hash before sending anything secret), then POST a CSR with the
// one-time join token. Renewal (renewal.ts) runs over the agent's
// authenticated tunnel, so the cluster a renewed certificate names comes from
// the session, never from the request. Every certificate names the
// incarnation of the cluster's current registration (incarnation.ts).
import type { IncomingMessage, ServerResponse } from "node:http";
import {
  type IssuedForAgent,
  JOIN_CA_PATH,
  JOIN_CERTIFICATE_PATH,
  MAX_JOIN_BODY,
  type StatusReason,
  sendStatus,
} from "@tether/common";
import type { Logger } from "../logger.js";
import type { AuditLog } from "../observe/audit-log.js";
import {
  type CertificateAuthority,
  CLUSTER_CERT_TTL_MS,
  csrPublicKey,
  isValidClusterName,
} from "../pki/pki.js";
import { hashToken } from "../pki/tokens.js";
import type { Frozen } from "../store/records.js";
import type { ClusterRecord, Store } from "../store/state-store.js";

export class JoinError extends Error {
  constructor(
    readonly reason: StatusReason,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Reads at most MAX_JOIN_BODY bytes. Events, not `for await`: the async iterator
 * destroys a Duplex when it finishes, which would reset the reply direction.
 */
export function readBounded(stream: NodeJS.ReadableStream): Promise<string> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_JOIN_BODY) {
        stream.removeListener("data", onData);
        stream.pause();
        reject(new JoinError("BadRequest", `request body larger than ${MAX_JOIN_BODY} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    stream.on("data", onData);
    stream.once("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    stream.once("error", reject);
  });
}

export interface JoinDeps {
  store: Store;
  ca: CertificateAuthority;
  log: Logger;
  /** Lifetime of agent certificates; default 7 days. */
  clusterCertTtlMs?: number;
  audit?: AuditLog;
}

export class JoinEndpoint {
  constructor(private readonly deps: JoinDeps) {}

  get certTtlMs(): number {
    return this.deps.clusterCertTtlMs ?? CLUSTER_CERT_TTL_MS;
  }

  /** The public key of a CSR whose signature checks out, or a BadRequest. */
  async publicKeyOf(csrPem: unknown): Promise<string> {
    if (typeof csrPem !== "string") throw new JoinError("BadRequest", "csr must be a PEM string");
    try {
      return await csrPublicKey(csrPem);
    } catch (err) {
      throw new JoinError("BadRequest", `the certificate request was refused: ${(err as Error).message}`);
    }
  }

  /** Issues a certificate for the current registration of a cluster, recording its serial before handing it out. */
  async issue(cluster: Frozen<ClusterRecord>, publicKeyPem: string): Promise<IssuedForAgent> {
    const cert = await this.deps.ca.issueClusterCertificate(cluster.name, {
      publicKeyPem,
      ttlMs: this.certTtlMs,
      incarnation: cluster.uid,
    });
    // Recorded first, so a crash cannot leave a certificate that revocation misses.
    await this.deps.store.recordIssued(cert.serial, cluster.name, cert.notAfter.toISOString());
    return {
      certificate: cert.certPem,
      ca: this.deps.ca.certPem,
      notAfter: cert.notAfter.toISOString(),
      serial: cert.serial,
    };
  }

  /** Serves JOIN_CA_PATH and JOIN_CERTIFICATE_PATH. */
  async handle(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    if (path === JOIN_CA_PATH && req.method === "GET") {
      res.writeHead(200, { "content-type": "application/x-pem-file" }).end(this.deps.ca.certPem);
      return;
    }
    if (path !== JOIN_CERTIFICATE_PATH || req.method !== "POST") {
      sendStatus(res, "NotFound", `use GET ${JOIN_CA_PATH} or POST ${JOIN_CERTIFICATE_PATH}`);
      return;
    }
    try {
      const body = JSON.parse(await readBounded(req)) as {
        cluster?: unknown;
        token?: unknown;
        csr?: unknown;
      };
      const cluster = body.cluster;
      if (typeof cluster !== "string" || !isValidClusterName(cluster)) {
        throw new JoinError("BadRequest", "cluster must be a DNS-1123 label");
      }
      this.deps.audit?.note(req, { cluster });
      if (typeof body.token !== "string") throw new JoinError("BadRequest", "token is missing");
      // Check the CSR before spending the token on it.
      const publicKeyPem = await this.publicKeyOf(body.csr);
      const used = await this.deps.store.consumeJoinToken(hashToken(body.token), cluster);
      if (!used) {
        this.deps.log.warn({ cluster, remoteAddress: req.socket.remoteAddress }, "join refused: bad token");
        throw new JoinError(
          "Unauthorized",
          `the join token for cluster "${cluster}" is unknown, expired or already used: ` +
            `run "tether-server join-token ${cluster}" on the host for a new one`,
        );
      }
      const record = await this.deps.store.getCluster(cluster);
      if (!record) throw new JoinError("Forbidden", `cluster "${cluster}" was removed`);
      const issued = await this.issue(record, publicKeyPem);
      this.deps.audit?.note(req, { serial: issued.serial, notAfter: issued.notAfter });
      this.deps.log.info({ cluster, serial: issued.serial, notAfter: issued.notAfter }, "cluster joined");
      const text = JSON.stringify(issued);
      res
        .writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(text) })
        .end(text);
    } catch (err) {
      if (err instanceof JoinError) sendStatus(res, err.reason, err.message);
      else if (err instanceof SyntaxError)
        sendStatus(res, "BadRequest", "the join request is not valid JSON");
      else throw err;
    }
  }
}
