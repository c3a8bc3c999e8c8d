// Callers that kubectl cannot be: requests and upgrades on raw TLS sockets,
// held open, sent from a chosen loopback source address, read byte for byte.
import { randomBytes } from "node:crypto";
import { request } from "node:https";
import { type TLSSocket, connect as tlsConnect } from "node:tls";

export interface RawTarget {
  /** https://127.0.0.1:<port> */
  url: string;
  caPem: string;
}

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export interface HeldUpgrade extends RawResponse {
  socket: TLSSocket;
  /** Resolves once the server closed (or the socket failed). */
  closed: Promise<void>;
}

function portOf(url: string): number {
  return Number(new URL(url).port);
}

/** A TLS connection to the server, from `localAddress` (any of 127.0.0.0/8) if given. */
export async function rawTls(target: RawTarget, localAddress?: string): Promise<TLSSocket> {
  const socket = tlsConnect({
    host: "127.0.0.1",
    port: portOf(target.url),
    ca: target.caPem,
    servername: "localhost",
    ...(localAddress ? { localAddress } : {}),
  });
  await new Promise<void>((resolve, reject) => {
    socket.once("secureConnect", () => resolve());
    socket.once("error", reject);
    socket.once("close", () => reject(new Error("closed before the TLS handshake finished")));
  });
  return socket;
}

/** Resolves when `socket` is closed (by either side); a liveness bound, not a timing assertion. */
export function whenClosed(socket: { once(e: "close", f: () => void): unknown; destroyed: boolean }) {
  return socket.destroyed ? Promise.resolve() : new Promise<void>((r) => socket.once("close", () => r()));
}

/** A liveness bound on every read, so that a server that never answers fails the test instead of hanging it. */
const ANSWER_WITHIN_MS = 15_000;

function bounded<T>(what: string, promise: Promise<T>, onTimeout: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout();
      reject(new Error(`${what}: no answer within ${ANSWER_WITHIN_MS} ms`));
    }, ANSWER_WITHIN_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Reads one HTTP/1.1 response head (and a Content-Length body) from a socket. */
function readResponse(socket: TLSSocket): Promise<RawResponse> {
  const read = new Promise<RawResponse>((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      const lines = buf.subarray(0, end).toString("latin1").split("\r\n");
      const status = Number(lines[0]?.split(" ")[1]);
      const headers: Record<string, string> = {};
      for (const line of lines.slice(1)) {
        const i = line.indexOf(":");
        headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      const length = status === 101 ? 0 : Number(headers["content-length"] ?? 0);
      if (buf.length < end + 4 + length) return;
      socket.off("data", onData);
      socket.off("close", onClose);
      resolve({ status, headers, body: buf.subarray(end + 4, end + 4 + length).toString("utf8") });
    };
    const onClose = () => reject(new Error(`connection closed before a response (${buf.length} bytes read)`));
    socket.on("data", onData);
    socket.once("close", onClose);
  });
  return bounded("upgrade response", read, () => socket.destroy());
}

/**
 * Sends an upgrade request (WebSocket, as kubectl exec and port-forward do)
 * and reads the answer; a 101 leaves the connection held open.
 */
export async function upgrade(
  target: RawTarget,
  path: string,
  token: string | undefined,
  options: { localAddress?: string; protocol?: string } = {},
): Promise<HeldUpgrade> {
  const socket = await rawTls(target, options.localAddress);
  socket.on("error", () => {});
  const closed = whenClosed(socket);
  socket.write(
    `GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
      `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\n` +
      `Sec-WebSocket-Protocol: ${options.protocol ?? "v5.channel.k8s.io, v4.channel.k8s.io"}\r\n` +
      (token ? `Authorization: Bearer ${token}\r\n` : "") +
      "\r\n",
  );
  const res = await readResponse(socket);
  return { ...res, socket, closed };
}

/** A masked client WebSocket frame (binary), as a client must send. */
export function wsFrame(payload: Buffer): Buffer {
  const mask = randomBytes(4);
  const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!));
  if (payload.length >= 126) throw new Error("short frames only");
  return Buffer.concat([Buffer.from([0x82, 0x80 | payload.length]), mask, masked]);
}

/** One request on its own connection (no pooling), from `localAddress` if given. */
export function rawRequest(
  target: RawTarget,
  path: string,
  options: { method?: string; headers?: Record<string, string>; body?: string; localAddress?: string } = {},
): Promise<RawResponse> {
  let req: ReturnType<typeof request> | undefined;
  const answer = new Promise<RawResponse>((resolve, reject) => {
    req = request(
      `${target.url}${path}`,
      {
        method: options.method ?? "GET",
        ca: target.caPem,
        agent: false,
        headers: options.headers ?? {},
        ...(options.localAddress ? { localAddress: options.localAddress } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers as Record<string, string>,
            body: Buffer.concat(chunks).toString("utf8"),
          }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(options.body);
  });
  return bounded(`${options.method ?? "GET"} ${path}`, answer, () => req?.destroy());
}

export interface HeldRequest {
  status: number;
  headers: Record<string, string>;
  /** The body, when the server ended the response (a refusal). */
  body: Promise<string>;
  /** What arrived so far (watch events). */
  received(): string;
  close(): void;
}

/** A request whose response is held open (a watch) until close(). */
export function heldRequest(target: RawTarget, path: string, token: string): Promise<HeldRequest> {
  let req: ReturnType<typeof request> | undefined;
  const head = new Promise<HeldRequest>((resolve, reject) => {
    req = request(
      `${target.url}${path}`,
      { ca: target.caPem, agent: false, headers: { authorization: `Bearer ${token}` } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", () => {});
        const body = new Promise<string>((r) => {
          res.on("end", () => r(Buffer.concat(chunks).toString("utf8")));
          res.on("close", () => r(Buffer.concat(chunks).toString("utf8")));
        });
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers as Record<string, string>,
          body,
          received: () => Buffer.concat(chunks).toString("utf8"),
          close: () => req?.destroy(),
        });
      },
    );
    req.on("error", (err) => reject(err));
    req.end();
  });
  return bounded(`held GET ${path}`, head, () => req?.destroy());
}
