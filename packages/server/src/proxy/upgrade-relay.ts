// An upgrade request (exec, attach, port-forward over SPDY or WebSocket)
// relayed to a member through one tunnel stream. The request goes out through
// Node's http client and the caller's socket is not read until the member has
// answered: only a 101 switching to the protocol the caller asked for turns
// the connection into a byte pipe. Any other answer is relayed as an ordinary
// response with Connection: close and the connection ends, so bytes a caller
// sends after the request head can never reach the member as a raw request.
import { request as httpRequest, type IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { type StatusReason, statusCodeOf, statusResponseHead } from "@tether/common";
import { neverAccepted } from "./replayable-body.js";

/** The upgrade protocols Kubernetes speaks (exec, attach, port-forward, proxy to pods). */
const PROTOCOLS = new Set(["websocket", "spdy/3.1"]);

const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "te",
  "trailer",
  "upgrade",
]);

/** Headers that frame the request or the connection; the relay sets its own. */
const FRAMING = new Set([...HOP_BY_HOP, "content-length"]);

export type UpgradeCheck = { ok: true; protocol: string } | { ok: false; message: string };

/** The one protocol a caller's upgrade request asks for, if Tether relays it. */
export function checkUpgrade(req: IncomingMessage): UpgradeCheck {
  const values = (req.headersDistinct.upgrade ?? []).flatMap((v) => v.split(","));
  const protocol = values.length === 1 ? values[0]!.trim() : "";
  if (!PROTOCOLS.has(protocol.toLowerCase())) {
    return {
      ok: false,
      message: `upgrade to "${values.join(", ")}" is not supported: Tether relays only websocket and SPDY/3.1`,
    };
  }
  const length = req.headers["content-length"];
  if (req.headers["transfer-encoding"] !== undefined || (length !== undefined && length !== "0")) {
    return { ok: false, message: "an upgrade request carries no body" };
  }
  return { ok: true, protocol };
}

export interface UpgradeRelay {
  /** The caller's connection and the bytes Node read past the request head. */
  socket: Duplex;
  head: Buffer;
  method: string;
  path: string;
  /** The request's headers, already rewritten for the member. */
  headers: [string, string][];
  protocol: string;
  /** Opens the tunnel stream the request travels on. */
  open(): Duplex;
  /** How to answer when the stream fails before the member answered. */
  failure(err: Error): [reason: StatusReason, message: string, retryAfterSeconds?: number];
  /**
   * The agent never took the stream (replayable-body.ts neverAccepted): true
   * when the caller relays the upgrade anew, on another session. Nothing of
   * the caller's connection was read yet, so it can go as it came.
   */
  refused?(err: Error): boolean;
  audit?: UpgradeAudit;
}

/** What the audit log (observe/audit-log.ts) learns of a relayed upgrade. */
export interface UpgradeAudit {
  /** A header line ("Name: value\r\n") for the answer the caller gets. */
  readonly headerLine: string;
  answered(code: number, body?: IncomingMessage): void;
  switched(socket: Duplex, stream: Duplex, headBytesIn: number, headBytesOut: number): void;
}

function headLines(res: IncomingMessage, keep: (name: string) => boolean): string {
  let head = `HTTP/1.1 ${res.statusCode} ${res.statusMessage ?? ""}\r\n`;
  for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
    const name = res.rawHeaders[i]!;
    if (keep(name.toLowerCase())) head += `${name}: ${res.rawHeaders[i + 1]}\r\n`;
  }
  return head;
}

/** Sends a last answer on the caller's connection and closes it; what the caller still sends is discarded. */
export function closeWith(socket: Duplex, text?: string): void {
  socket.resume();
  socket.once("finish", () => socket.destroy());
  socket.end(text);
}

export function relayUpgrade(r: UpgradeRelay): void {
  const { socket } = r;
  const headers = r.headers.filter(([name]) => !FRAMING.has(name.toLowerCase()));
  headers.push(["Connection", "Upgrade"], ["Upgrade", r.protocol]);
  // Without a length Node would frame a POST (SPDY) as chunked and send a body.
  if (r.method !== "GET" && r.method !== "HEAD") headers.push(["Content-Length", "0"]);
  let answered = false;
  const upstream = (() => {
    try {
      return httpRequest({
        method: r.method,
        path: r.path,
        headers: headers.flat(),
        createConnection: () => r.open(),
      });
    } catch (err) {
      closeWith(socket, statusResponseHead("BadRequest", (err as Error).message));
      return undefined;
    }
  })();
  if (!upstream) return;
  socket.on("close", () => upstream.destroy());

  upstream.on("upgrade", (res, stream, upstreamHead) => {
    answered = true;
    const offered = String(res.headers.upgrade ?? "");
    if (offered.toLowerCase() !== r.protocol.toLowerCase()) {
      stream.destroy();
      closeWith(
        socket,
        statusResponseHead(
          "BadGateway",
          `the member answered an upgrade to ${r.protocol} by switching to "${offered}"`,
        ),
      );
      return;
    }
    stream.on("error", () => socket.destroy());
    socket.on("close", () => stream.destroy());
    // After a clean end the pipe has already ended the socket: let it flush.
    stream.on("close", () => {
      if (!socket.writableEnded) socket.destroy();
    });
    r.audit?.switched(socket, stream, r.head.length, upstreamHead.length);
    socket.write(`${headLines(res, () => true)}${r.audit?.headerLine ?? ""}\r\n`);
    if (upstreamHead.length > 0) socket.write(upstreamHead);
    if (r.head.length > 0) stream.write(r.head);
    socket.pipe(stream);
    stream.pipe(socket);
  });

  upstream.on("response", (res) => {
    answered = true;
    if (res.statusCode === 101) {
      // A 101 without Upgrade/Connection switches to nothing the caller asked for.
      upstream.destroy();
      closeWith(socket, statusResponseHead("BadGateway", "the member switched protocols without naming one"));
      return;
    }
    r.audit?.answered(res.statusCode ?? 0, res);
    socket.write(
      `${headLines(res, (name) => !HOP_BY_HOP.has(name))}${r.audit?.headerLine ?? ""}Connection: close\r\n\r\n`,
    );
    res.on("error", () => socket.destroy());
    res.on("end", () => {
      upstream.destroy();
      closeWith(socket);
    });
    res.pipe(socket, { end: false });
  });

  upstream.on("error", (err) => {
    if (answered) {
      socket.destroy();
      return;
    }
    answered = true;
    if (neverAccepted(err) && r.refused?.(err)) return;
    const [reason, message, retryAfterSeconds] = r.failure(err);
    r.audit?.answered(statusCodeOf(reason));
    closeWith(socket, statusResponseHead(reason, message, retryAfterSeconds));
  });
  upstream.end();
}
