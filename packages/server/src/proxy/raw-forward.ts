// A plain request to an agent from before structured heads (it did not
// announce HEAD_FEATURE): re-sent as HTTP/1.1 by Node's client over the
// session's pool of tunnel streams (agent-sessions.ts httpAgent), whose
// framing of the body Node makes itself. The answer reaches the caller the
// same way a structured one does: its head at once (a watch may send nothing
// for minutes), its connection headers dropped.
import {
  type Agent as HttpAgent,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  request,
} from "node:http";
import { request as httpsRequest } from "node:https";
import type { Socket } from "node:net";
import { CONNECTION_HEADERS, sendStatus } from "@tether/common";
import { responseCut, stripConnectionHeaders, writeResponseHead } from "../http/connection-headers.js";
import type { PlainForward } from "./plain-forward.js";

const UNASKED_SWITCH = "the member switched protocols on a request that asked for no upgrade";

/**
 * `target`: an https origin to send it to instead (the replica hop), whose
 * connections `agent` (an https.Agent) makes; without it, the tunnel streams.
 */
export function forwardRaw(
  f: Omit<PlainForward, "open"> & {
    agent: HttpAgent;
    target?: URL;
    /** An answer this returns true for is dropped, not passed on: the caller sends the request elsewhere. */
    divert?: (status: number, headers: IncomingHttpHeaders) => boolean;
    /** The request was sent before (and diverted): its body, empty, was read already. */
    again?: boolean;
  },
): void {
  const { req, res } = f;
  const headers: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(f.headers)) {
    if (value !== undefined && !name.startsWith(":")) headers[name] = value;
  }
  let answered = false;
  let diverted = false;
  const options = { method: req.method, path: f.path, headers, agent: f.agent };
  const upstream = f.target
    ? httpsRequest({
        ...options,
        hostname: f.target.hostname.replace(/^\[|\]$/g, ""),
        port: Number(f.target.port || 443),
      })
    : request({ ...options, host: "apiserver.tether" });
  // Without noDelay the replica hop's small writes wait for delayed ACKs: tens of ms per request.
  if (f.target) upstream.on("socket", (socket) => (socket as Socket).setNoDelay(true));
  const unasked = () => {
    answered = true;
    sendStatus(res, "BadGateway", UNASKED_SWITCH);
  };
  // A 101 to a request that asked for no upgrade: without a listener Node drops the stream and the caller waits forever.
  upstream.on("upgrade", (_up, socket) => {
    socket.destroy();
    unasked();
  });
  upstream.on("response", (up) => {
    if (up.statusCode === 101) {
      up.destroy();
      unasked();
      return;
    }
    answered = true;
    if (f.divert?.(up.statusCode ?? 0, up.headers)) {
      diverted = true;
      up.resume();
      return;
    }
    // The Connection header's own list too: they are hop-by-hop by the member's word.
    stripConnectionHeaders(up.headers);
    const out: OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(up.headers)) {
      if (value !== undefined && !CONNECTION_HEADERS.has(name)) out[name] = value;
    }
    f.answered(up.statusCode ?? 502, up);
    writeResponseHead(res, up.statusCode ?? 502, out);
    res.flushHeaders();
    up.pipe(res);
    up.on("error", () => res.destroy());
    up.on("aborted", () => res.destroy());
  });
  upstream.on("error", (err) => {
    if (diverted) return;
    if (!answered) f.failure(err);
    else res.destroy();
  });
  res.on("close", () => {
    if (responseCut(res)) upstream.destroy();
  });
  if (f.again) upstream.end();
  else req.pipe(upstream);
}
