// A raw agent for hostile tests: the real tunnel session code (@tether/tunnel
// over ws) with a cluster certificate, doing only what a test tells it to —
// which a well-behaved TetherAgent never would.
import { keyAndCsr } from "@tether/agent";
import { AGENT_PATH, RENEW_SERVICE } from "@tether/common";
import type { CertificateAuthority, Store } from "@tether/server";
import {
  isTetherError,
  ResetCode,
  type Session,
  sessionFromWebSocket,
  WEBSOCKET_OPTIONS,
} from "@tether/tunnel";
import { WebSocket } from "ws";
import { TEST_TUNNEL } from "./fixture.js";

export interface Cert {
  certPem: string;
  keyPem: string;
  serial: string;
}

/** A certificate of the current registration of `name`, recorded as the join endpoint would. */
export async function issueAgentCert(
  ca: CertificateAuthority,
  store: Store,
  name: string,
  ttlMs?: number,
): Promise<Cert> {
  const uid = (await store.getCluster(name))!.uid;
  const c = await ca.issueClusterCertificate(name, { incarnation: uid, ...(ttlMs ? { ttlMs } : {}) });
  await store.recordIssued(c.serial, name, c.notAfter.toISOString());
  return { certPem: c.certPem, keyPem: c.keyPem!, serial: c.serial };
}

/** Dials the agent endpoint with `cert`: the tunnel session, or the HTTP status the server refused with. */
export function dialAgent(serverUrl: string, caPem: string, cert: Cert): Promise<Session | number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${serverUrl.replace(/^https/, "wss")}${AGENT_PATH}`, {
      ...WEBSOCKET_OPTIONS,
      ca: caPem,
      cert: cert.certPem,
      key: cert.keyPem,
    });
    ws.once("unexpected-response", (_req, res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.once("error", reject);
    ws.once("open", () =>
      resolve(sessionFromWebSocket(ws, { ...TEST_TUNNEL, role: "client", accept: () => ResetCode.REFUSED })),
    );
  });
}

export async function connectAgent(serverUrl: string, caPem: string, cert: Cert): Promise<Session> {
  const s = await dialAgent(serverUrl, caPem, cert);
  if (typeof s === "number") throw new Error(`refused with ${s}`);
  return s;
}

/** Opens a renewal stream; `done` resolves with the reply text, or the reset code when the server reset it. */
export function renewal(
  session: Session,
  body?: string | Buffer,
): { done: Promise<string | number>; stream: ReturnType<Session["open"]> } {
  const stream = session.open(RENEW_SERVICE);
  const done = new Promise<string | number>((resolve) => {
    let text = "";
    stream.on("data", (c: Buffer) => {
      text += c.toString("utf8");
    });
    stream.once("end", () => resolve(text));
    stream.once("error", (err) => resolve(isTetherError(err) ? (err.resetCode ?? -1) : -1));
  });
  if (body !== undefined) stream.end(body);
  return { done, stream };
}

/** A renewal request body with a valid CSR. */
export async function csrBody(cluster: string): Promise<string> {
  return JSON.stringify({ csr: (await keyAndCsr(cluster)).csrPem });
}
