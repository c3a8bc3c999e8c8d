// A hostile agent: Tether's own session code over wss, dialled with a valid
// cluster certificate (stolen from the real agent), that does whatever a test
// tells it — flood renewal streams, hold replaced sessions, answer the
// server's requests with bytes no apiserver would send.
import type { Duplex } from "node:stream";
import { AGENT_PATH, RENEW_SERVICE } from "@tether/common";
import { ResetCode, type Session, sessionFromWebSocket, WEBSOCKET_OPTIONS } from "@tether/tunnel";
import { WebSocket } from "ws";

export interface FakeAgent {
  session: Session;
  ws: WebSocket;
  /** Resolves when the session ends, whoever ended it. */
  closed: Promise<void>;
  /** True once the session ended. */
  readonly isClosed: boolean;
}

export interface Credentials {
  caPem: string;
  certPem: string;
  keyPem: string;
}

/**
 * Connects; rejects with the HTTP status if the server refuses the agent.
 * Streams the server opens go to `onStream` (refused without one).
 */
export function connectFakeAgent(
  serverUrl: string,
  creds: Credentials,
  onStream?: (stream: Duplex) => void,
): Promise<FakeAgent> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${serverUrl.replace(/^http/, "ws")}${AGENT_PATH}`, {
      ...WEBSOCKET_OPTIONS,
      ca: creds.caPem,
      cert: creds.certPem,
      key: creds.keyPem,
      handshakeTimeout: 10_000,
    });
    ws.once("unexpected-response", (_req, res) => {
      res.resume();
      reject(new Error(`agent refused: HTTP ${res.statusCode}`));
      ws.terminate();
    });
    ws.once("error", reject);
    ws.once("open", () => {
      const session = sessionFromWebSocket(ws, {
        role: "client",
        keepAliveInterval: 500,
        // The hostile party never gives up on its own: only the server ends its sessions.
        deadPeerTimeout: 0,
        accept: () => (onStream ? true : ResetCode.REFUSED),
      });
      // A hostile agent ignores go-away: Tether's session would close itself once idle.
      (session as unknown as { closeIfIdle: () => void }).closeIfIdle = () => {};
      session.on("error", () => {});
      if (onStream) session.on("stream", onStream);
      let ended = false;
      const closed = new Promise<void>((r) =>
        session.once("close", () => {
          ended = true;
          r();
        }),
      );
      resolve({
        session,
        ws,
        closed,
        get isClosed() {
          return ended;
        },
      });
    });
  });
}

/** One renewal stream and how it ended, watched from the hostile agent's side. */
export class RenewalStream {
  reset = false;
  ended = false;
  reply = "";
  readonly stream: Duplex;
  readonly done: Promise<void>;

  constructor(session: Session) {
    this.stream = session.open(RENEW_SERVICE);
    this.stream.on("data", (c: Buffer) => {
      if (this.reply.length < 64 * 1024) this.reply += c.toString("utf8");
    });
    this.done = new Promise((resolve) => {
      this.stream.once("error", () => {
        this.reset = true;
        resolve();
      });
      this.stream.once("end", () => {
        this.ended = true;
        resolve();
      });
      this.stream.once("close", () => resolve());
    });
  }

  /** Settled: reset by the server, answered (and ended), or closed. */
  get settled(): boolean {
    return this.reset || this.ended || this.stream.destroyed;
  }
}
