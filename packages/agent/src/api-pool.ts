// One long-lived HTTP/2 connection to the apiserver per auth mode, for plain
// requests with a structured head: every request is a stream of it, so no
// request waits for a connection and none can frame another's body. A
// connection that fails or is told to go away is dropped; the next request
// dials a new one.
import { type ClientHttp2Session, type ClientHttp2Stream, connect, constants } from "node:http2";
import type { AuthMode } from "@tether/common";
import type { KubeTarget } from "./kube-target.js";

export class ApiPool {
  private readonly sessions = new Map<AuthMode, ClientHttp2Session>();

  constructor(
    private readonly target: KubeTarget,
    private readonly tls: Record<AuthMode, KubeTarget["tls"]>,
  ) {}

  private session(mode: AuthMode): ClientHttp2Session {
    const live = this.sessions.get(mode);
    if (live && !live.closed && !live.destroyed) return live;
    const session = connect(this.target.url.origin, { ...this.tls[mode], ALPNProtocols: ["h2"] });
    const drop = () => {
      if (this.sessions.get(mode) === session) this.sessions.delete(mode);
    };
    session.on("error", drop);
    session.on("goaway", drop);
    session.on("close", drop);
    // Idle between requests is normal: the connection must not hold the agent's event loop open.
    session.unref();
    this.sessions.set(mode, session);
    return session;
  }

  request(
    mode: AuthMode,
    method: string,
    path: string,
    headers: Record<string, string | string[]>,
  ): ClientHttp2Stream {
    return this.session(mode).request(
      {
        ...headers,
        [constants.HTTP2_HEADER_METHOD]: method,
        [constants.HTTP2_HEADER_PATH]: path,
        [constants.HTTP2_HEADER_AUTHORITY]: this.target.url.host,
      },
      // Node would end a GET's or DELETE's side at once; kubectl delete sends DeleteOptions as a body.
      { endStream: false },
    );
  }

  /** Drops the connections; a later request dials again (the agent reconnects with the same pool). */
  close(): void {
    for (const s of this.sessions.values()) s.destroy();
    this.sessions.clear();
  }
}
