// A plain request that arrives with a structured head (packages/common/HEAD.md):
// the head is read once, the auth mode applied (forwarder.ts credentialHeaders),
// and the request re-issued on a pooled apiserver connection; the response's
// head goes back structured and its body as bytes, the stream's FIN ending it.
// The body is framed here, never copied through as it came: a declared length
// is held to exactly, anything else goes chunked, so no
// bytes of one request can reach the apiserver as the start of another on a
// kept-alive connection (body-pipe.ts).
import type { Agent as HttpsAgent } from "node:https";
import { request as httpsRequest } from "node:https";
import type { OutgoingHttpHeaders } from "node:http";
import type { Duplex } from "node:stream";
import {
  arrivedWhole,
  CONNECTION_HEADERS,
  declaredLength,
  encodeResponseHead,
  type HeaderPairs,
  pipeBody,
  readRequestHead,
  type StatusReason,
  statusBody,
  statusCodeOf,
} from "@tether/common";
import type { KubeTarget } from "./kube-target.js";

export interface StructuredDeps {
  target: KubeTarget;
  /** The apiserver's host as a socket address and its port. */
  host: string;
  port: number;
  pool: HttpsAgent;
  applyCredentials(headers: Record<string, string | string[] | undefined>): string | undefined;
  report(err: Error, callerGone: boolean): void;
  onApiserverError(): void;
}

/** Ends the stream with a Status answer in a structured head. */
function answerStatus(stream: Duplex, reason: StatusReason, message: string): void {
  const body = statusBody(reason, message);
  stream.resume();
  stream.end(
    Buffer.concat([
      encodeResponseHead({
        status: statusCodeOf(reason),
        headers: [
          ["Content-Type", "application/json"],
          ["Content-Length", String(Buffer.byteLength(body))],
        ],
      }),
      Buffer.from(body),
    ]),
  );
}

/** Whether the request has a body: a declared length says; without one, the first byte or the FIN does. */
function hasBody(stream: Duplex): Promise<boolean> {
  // A stream whose FIN came with the head has emitted 'end' already.
  if (stream.readableEnded) return Promise.resolve(false);
  return new Promise((resolve) => {
    const done = (value: boolean, chunk?: Buffer) => {
      stream.off("data", onData);
      stream.off("end", onEnd);
      stream.off("close", onEnd);
      stream.pause();
      if (chunk) stream.unshift(chunk);
      resolve(value);
    };
    const onData = (chunk: Buffer) => done(true, chunk);
    const onEnd = () => done(false);
    stream.on("data", onData);
    stream.once("end", onEnd);
    stream.once("close", onEnd);
    stream.resume();
  });
}

function headerObject(pairs: HeaderPairs): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [raw, value] of pairs) {
    const name = raw.toLowerCase();
    if (CONNECTION_HEADERS.has(name) || name === "host" || name === "proxy-authorization") continue;
    const had = out[name];
    if (had === undefined) out[name] = value;
    else if (Array.isArray(had)) had.push(value);
    // One Impersonate-Group per group: joined with ", " they would name a group nobody is bound to.
    else out[name] = [had, value];
  }
  return out;
}

export async function forwardStructured(stream: Duplex, deps: StructuredDeps): Promise<void> {
  let callerGone = false;
  let reported = false;
  stream.on("error", (err) => {
    reported = true;
    deps.report(err, false);
  });
  let head: Awaited<ReturnType<typeof readRequestHead>>;
  try {
    head = await readRequestHead(stream);
  } catch (err) {
    if (!stream.destroyed) answerStatus(stream, "BadRequest", (err as Error).message);
    return;
  }
  const headers = headerObject(head.headers);
  const length = declaredLength(headers["content-length"]);
  if (headers["content-length"] !== undefined && length === undefined) {
    answerStatus(stream, "BadRequest", "Content-Length must be one decimal number");
    return;
  }
  const refusal = deps.applyCredentials(headers);
  if (refusal) {
    answerStatus(stream, "BadRequest", refusal);
    return;
  }
  if (length === undefined && (await hasBody(stream))) headers["transfer-encoding"] = "chunked";
  if (stream.destroyed) return;
  let answered = false;
  const upstream = httpsRequest({
    protocol: "https:",
    hostname: deps.host,
    port: deps.port,
    method: head.method,
    path: head.path,
    headers: { ...(headers as OutgoingHttpHeaders), host: deps.target.url.host },
    agent: deps.pool,
  });
  const unasked = () => {
    answered = true;
    answerStatus(
      stream,
      "BadGateway",
      "the apiserver switched protocols on a request that asked for no upgrade",
    );
  };
  upstream.on("upgrade", (_up, socket) => {
    socket.destroy();
    unasked();
  });
  upstream.on("response", (up) => {
    answered = true;
    if (up.statusCode === 101 || (up.statusCode ?? 0) < 200) {
      upstream.destroy();
      unasked();
      return;
    }
    const pairs: HeaderPairs = [];
    for (let i = 0; i + 1 < up.rawHeaders.length; i += 2) {
      const name = up.rawHeaders[i]!;
      if (!CONNECTION_HEADERS.has(name.toLowerCase())) pairs.push([name, up.rawHeaders[i + 1]!]);
    }
    let encoded: Buffer;
    try {
      encoded = encodeResponseHead({ status: up.statusCode ?? 502, headers: pairs });
    } catch (err) {
      upstream.destroy();
      answerStatus(
        stream,
        "BadGateway",
        `the apiserver's answer cannot cross the tunnel: ${(err as Error).message}`,
      );
      return;
    }
    // A response cut short must not look complete: the stream is reset, not ended.
    up.on("aborted", () => stream.destroy());
    up.on("error", () => stream.destroy());
    // The head waits a tick for the body bytes of the read that brought it: written together they
    // cross in one tunnel frame (not a frame each, one message after the other), and the server then
    // writes head and body to its caller at once. A watch's head, with nothing behind it, goes alone.
    // A response that arrived whole by then ends with them too: its FIN rides on the same frame.
    process.nextTick(() => {
      if (stream.destroyed) return;
      stream.write(encoded);
      for (let chunk: Buffer | null = up.read(); chunk !== null; chunk = up.read()) stream.write(chunk);
      if (arrivedWhole(up)) {
        stream.end();
        // Read to its end, so the connection goes back to the pool.
        up.resume();
      } else up.pipe(stream);
    });
  });
  let cut = false;
  upstream.on("error", (err) => {
    if (cut) return;
    deps.report(err, callerGone);
    if (!stream.destroyed) deps.onApiserverError();
    if (!answered) {
      answered = true;
      if (!stream.destroyed)
        answerStatus(stream, "BadGateway", `the apiserver could not be reached: ${err.message}`);
    } else stream.destroy();
  });
  // The caller went away (the stream was reset): stop the upstream request too.
  stream.on("close", () => {
    if (stream.writableFinished) return;
    callerGone = true;
    // A CANCEL after the request's end closes the stream without an error: say it at debug all the same.
    if (!reported) deps.report(new Error("the server cancelled the stream: the caller went away"), true);
    upstream.destroy();
  });
  pipeBody(stream, upstream, length, (why) => {
    cut = true;
    if (!answered) answerStatus(stream, "BadRequest", `the request body is ${why} than its Content-Length`);
    else stream.destroy();
    answered = true;
  });
}
