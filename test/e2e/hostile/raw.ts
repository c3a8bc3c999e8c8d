// Raw connections to tether-server for attacks kubectl cannot express:
// pipelined bytes after an upgrade request, half-sent headers, connections
// that never speak. Everything the server sends back is kept, so a test can
// count the responses (a second one means smuggled bytes reached a member)
// and see whether the server closed the connection.
import { randomBytes } from "node:crypto";
import { connect as netConnect, type Socket } from "node:net";
import { type TLSSocket, connect as tlsConnect } from "node:tls";

export interface Target {
  port: number;
  /** The server's CA. */
  ca: string;
  /** Source address, e.g. 127.0.0.2 for the hostile party (all of 127/8 is loopback on Linux). */
  localAddress?: string;
  /** A client certificate (the agent endpoint). */
  cert?: string;
  key?: string;
}

export interface ResponseHead {
  status: number;
  headers: Record<string, string>;
  /** The bytes after the head that arrived so far (the body, possibly chunked). */
  rest: string;
}

/** One connection and everything it received. */
export class RawConnection {
  private chunks: Buffer[] = [];
  private waiters = new Set<() => void>();
  closed = false;
  /** True once a TLS connection finished its handshake (plain TCP: once connected). */
  established = false;
  readonly closedPromise: Promise<void>;

  constructor(readonly socket: Socket | TLSSocket) {
    socket.on("data", (c: Buffer) => {
      this.chunks.push(c);
      this.wake();
    });
    socket.on("error", () => {});
    this.closedPromise = new Promise((resolve) => {
      socket.once("close", () => {
        this.closed = true;
        this.wake();
        resolve();
      });
    });
  }

  private wake(): void {
    for (const w of this.waiters) w();
  }

  get text(): string {
    return Buffer.concat(this.chunks).toString("latin1");
  }

  /**
   * Status codes of every HTTP response head received, in order. A second
   * head may follow the first body directly (no CRLF after a JSON body), so
   * status lines are looked for anywhere.
   */
  get statuses(): number[] {
    return [...this.text.matchAll(/HTTP\/1\.[01] (\d{3}) /g)].map((m) => Number(m[1]));
  }

  /** The first response head, if it is complete. */
  get head(): ResponseHead | undefined {
    const text = this.text;
    const end = text.indexOf("\r\n\r\n");
    if (!text.startsWith("HTTP/") || end < 0) return undefined;
    const [statusLine, ...lines] = text.slice(0, end).split("\r\n");
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const i = line.indexOf(":");
      if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    return { status: Number(statusLine!.split(" ")[1]), headers, rest: text.slice(end + 4) };
  }

  write(data: string | Buffer): void {
    if (!this.closed) this.socket.write(data);
  }

  /** Resolves true once `cond` holds, false when `limitMs` passed (a liveness bound). */
  waitUntil(cond: (c: RawConnection) => boolean, limitMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const check = () => {
        if (!cond(this)) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        resolve(cond(this));
      }, limitMs);
      this.waiters.add(check);
      check();
    });
  }

  /** Waits for the first response head only (a watch's body never ends). */
  async responseHead(limitMs = 15_000): Promise<ResponseHead | undefined> {
    await this.waitUntil((c) => c.head !== undefined || c.closed, limitMs);
    return this.head;
  }

  /**
   * Waits for the first response: its head, then its body (by Content-Length,
   * the last chunk, or the connection's end; a 101 has none). Undefined when
   * the connection closed or the bound passed without a head.
   */
  async response(limitMs = 15_000): Promise<ResponseHead | undefined> {
    await this.waitUntil((c) => c.head !== undefined || c.closed, limitMs);
    const head = this.head;
    if (!head || head.status === 101) return head;
    const length = Number(head.headers["content-length"] ?? Number.NaN);
    await this.waitUntil((c) => {
      const rest = c.head?.rest ?? "";
      if (c.closed) return true;
      if (Number.isFinite(length)) return rest.length >= length;
      return /(^|\r\n)0\r\n\r\n/.test(rest);
    }, 5_000);
    return this.head;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** A TLS connection; resolves once the handshake is done or failed (then `closed` or not `established`). */
export function tlsOpen(t: Target): Promise<RawConnection> {
  return new Promise((resolve) => {
    const socket = tlsConnect({
      host: "127.0.0.1",
      port: t.port,
      ca: t.ca,
      servername: "localhost",
      ALPNProtocols: ["http/1.1"],
      ...(t.localAddress ? { localAddress: t.localAddress } : {}),
      ...(t.cert && t.key ? { cert: t.cert, key: t.key } : {}),
    });
    const conn = new RawConnection(socket);
    socket.once("secureConnect", () => {
      conn.established = true;
      resolve(conn);
    });
    socket.once("close", () => resolve(conn));
  });
}

/** A plain TCP connection that never starts TLS. */
export function tcpOpen(t: Target): Promise<RawConnection> {
  return new Promise((resolve) => {
    const socket = netConnect({
      host: "127.0.0.1",
      port: t.port,
      ...(t.localAddress ? { localAddress: t.localAddress } : {}),
    });
    const conn = new RawConnection(socket);
    socket.once("connect", () => {
      conn.established = true;
      resolve(conn);
    });
    socket.once("close", () => resolve(conn));
  });
}

/** An HTTP/1.1 request head (CRLFs, blank line). */
export function requestHead(method: string, path: string, headers: [string, string][]): string {
  return `${method} ${path} HTTP/1.1\r\n${headers.map(([n, v]) => `${n}: ${v}\r\n`).join("")}\r\n`;
}

/** The headers of a WebSocket upgrade as kubectl sends it for exec. */
export function websocketUpgrade(): [string, string][] {
  return [
    ["Connection", "Upgrade"],
    ["Upgrade", "websocket"],
    ["Sec-WebSocket-Version", "13"],
    ["Sec-WebSocket-Key", randomBytes(16).toString("base64")],
    ["Sec-WebSocket-Protocol", "v4.channel.k8s.io"],
  ];
}

/** A request, sent on a new TLS connection, and its first response head. */
export async function exchange(
  t: Target,
  request: string,
  limitMs = 15_000,
): Promise<{ conn: RawConnection; head: ResponseHead | undefined }> {
  const conn = await tlsOpen(t);
  conn.write(request);
  const head = await conn.response(limitMs);
  return { conn, head };
}

const REASONS: Record<number, string> = {
  400: "BadRequest",
  401: "Unauthorized",
  403: "Forbidden",
  429: "TooManyRequests",
  502: "BadGateway",
  503: "ServiceUnavailable",
};

/** Whether a response body (chunked or not) is a Kubernetes Status with this code and its reason. */
export function isStatus(head: ResponseHead | undefined, code: number): boolean {
  const reason = REASONS[code];
  return (
    head !== undefined &&
    /"kind":"Status"/.test(head.rest) &&
    new RegExp(`"code":${code}\\b`).test(head.rest) &&
    (reason === undefined || head.rest.includes(`"reason":"${reason}"`))
  );
}
