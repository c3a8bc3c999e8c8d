// Joining: fetch the server's CA, check it against the pinned hash BEFORE
// anything secret is sent, then trade the one-time token and a CSR (the key
// stays here) for a short-lived client certificate.
import { request } from "node:https";
import { caHashOf, JOIN_CA_PATH, JOIN_CERTIFICATE_PATH, TetherError } from "@tether/common";
import { type Credentials, keyAndCsr } from "./credentials.js";
import { connectThrough, type EgressProxy, ProxyError } from "./egress-proxy.js";

/** Certificates are backdated this much by the server; more skew than that breaks TLS. */
const MAX_CLOCK_SKEW_MS = 5 * 60 * 1000;

export class JoinError extends TetherError {
  override name = "JoinError";
}

export interface JoinOptions {
  server: string;
  cluster: string;
  token: string;
  /** "sha256:<hex>" of the CA's SubjectPublicKeyInfo, as `tether-server cluster add` prints it. */
  caHash: string;
  /** The forward proxy to reach the server through, if any. */
  proxy?: EgressProxy | undefined;
}

interface Reply {
  status: number;
  body: string;
  date: string | undefined;
}

function call(
  url: URL,
  options: { method: string; ca?: string; body?: string; proxy?: EgressProxy | undefined },
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: options.method,
        // Before the pin is checked the server is unauthenticated: only public data goes out.
        ...(options.ca ? { ca: options.ca } : { rejectUnauthorized: false }),
        headers: options.body ? { "content-type": "application/json" } : {},
        timeout: 30_000,
        ...(options.proxy ? { createConnection: connectThrough(options.proxy) } : {}),
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          if (body.length < 1024 * 1024) body += c;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body, date: res.headers.date }));
      },
    );
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", (err) => {
      if (err instanceof ProxyError) {
        reject(err);
        return;
      }
      const e = err as NodeJS.ErrnoException;
      reject(
        new JoinError(
          "ERR_TETHER_SERVER_UNREACHABLE",
          `cannot reach tether-server at ${url.origin}: ${e.code ?? ""} ${e.message}`
            .replace(/\s+/g, " ")
            .trim(),
        ),
      );
    });
    req.end(options.body);
  });
}

function statusMessage(reply: Reply): string {
  try {
    return (JSON.parse(reply.body) as { message?: string }).message ?? reply.body;
  } catch {
    return reply.body.slice(0, 500);
  }
}

export async function join(o: JoinOptions): Promise<Credentials> {
  if (!/^sha256:[0-9a-f]{64}$/.test(o.caHash)) {
    throw new JoinError(
      "ERR_TETHER_BAD_CA_HASH",
      `--ca-hash must look like sha256:<64 hex digits>, got "${o.caHash}"`,
    );
  }
  const base = new URL(o.server);
  const caReply = await call(new URL(JOIN_CA_PATH, base), { method: "GET", proxy: o.proxy });
  if (caReply.status !== 200) {
    throw new JoinError(
      "ERR_TETHER_JOIN_FAILED",
      `GET ${JOIN_CA_PATH}: ${caReply.status} ${statusMessage(caReply)}`,
    );
  }
  const caPem = caReply.body;
  let actual: string;
  try {
    actual = caHashOf(caPem);
  } catch {
    throw new JoinError(
      "ERR_TETHER_JOIN_FAILED",
      `${base.origin} did not serve a CA certificate at ${JOIN_CA_PATH}`,
    );
  }
  if (actual !== o.caHash) {
    throw new JoinError(
      "ERR_TETHER_CA_HASH_MISMATCH",
      `the server's CA hash is ${actual}, not the expected ${o.caHash}: this may not be your tether-server ` +
        "(or --ca-hash is wrong). Nothing was sent to it.",
    );
  }
  if (caReply.date) {
    const skew = Date.parse(caReply.date) - Date.now();
    if (Math.abs(skew) > MAX_CLOCK_SKEW_MS) {
      throw new JoinError(
        "ERR_TETHER_CLOCK_SKEW",
        `this machine's clock is ${Math.round(skew / 1000)}s off the server's; fix time sync (NTP) on one of them and retry`,
      );
    }
  }
  const { keyPem, csrPem } = await keyAndCsr(o.cluster);
  const reply = await call(new URL(JOIN_CERTIFICATE_PATH, base), {
    method: "POST",
    ca: caPem,
    proxy: o.proxy,
    body: JSON.stringify({ cluster: o.cluster, token: o.token, csr: csrPem }),
  });
  if (reply.status !== 200) {
    throw new JoinError("ERR_TETHER_JOIN_REFUSED", `the server refused to join: ${statusMessage(reply)}`);
  }
  const issued = JSON.parse(reply.body) as { certificate: string; ca: string };
  return { caPem, certPem: issued.certificate, keyPem };
}
