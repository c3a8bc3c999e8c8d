// The agent's way out through an HTTP forward proxy: which proxy applies to
// the server's URL (--proxy, else https_proxy/HTTPS_PROXY for an https server
// and http_proxy/HTTP_PROXY for an http one, lower case first as curl does;
// NO_PROXY exempts destinations), and one dialer that opens an HTTP CONNECT
// tunnel through it and then TLS to the server inside. The join requests and
// the tunnel's WebSocket both take it as `createConnection`; renewal runs on
// the tunnel, and the apiserver is always dialed directly.
//
// The proxy's credentials come from its URL's userinfo and go only into the
// Proxy-Authorization header: anything printed or logged names the proxy as
// scheme://host:port.
import type { ClientRequestArgs } from "node:http";
import { isIP, connect as netConnect, type Socket } from "node:net";
import { type ConnectionOptions, type TLSSocket, connect as tlsConnect } from "node:tls";
import { type ProxyUrl, parseProxyUrl as parseUrl, TetherError } from "@tether/common";
import { parseNoProxy } from "./no-proxy.js";

export const ERR_PROXY_URL = "ERR_TETHER_AGENT_PROXY_URL";
export const ERR_PROXY_UNREACHABLE = "ERR_TETHER_AGENT_PROXY_UNREACHABLE";
export const ERR_PROXY_AUTH = "ERR_TETHER_AGENT_PROXY_AUTH";
export const ERR_PROXY_FORBIDDEN = "ERR_TETHER_AGENT_PROXY_FORBIDDEN";
export const ERR_PROXY_REFUSED = "ERR_TETHER_AGENT_PROXY_REFUSED";
export const ERR_PROXY_TIMEOUT = "ERR_TETHER_AGENT_PROXY_TIMEOUT";

/** How long the proxy may take to connect and answer the CONNECT. */
export const DEFAULT_PROXY_TIMEOUT_MS = 15_000;
/** A CONNECT answer's head is a status line and a few headers. */
const MAX_REPLY_HEAD = 16 * 1024;

export class ProxyError extends TetherError {
  override name = "ProxyError";
}

export interface EgressProxy extends ProxyUrl {
  /** Where the URL came from, for messages: "--proxy", "HTTPS_PROXY", … */
  source: string;
}

/** Parses a proxy URL the way the manifest generator checks one. */
export function parseProxyUrl(raw: string, source: string): EgressProxy {
  const parsed = parseUrl(raw);
  if ("problem" in parsed) {
    const gap = parsed.problem.startsWith(":") ? "" : " ";
    throw new ProxyError(ERR_PROXY_URL, `${source}${gap}${parsed.problem}`);
  }
  return { ...parsed, source };
}

function firstSet(env: NodeJS.ProcessEnv, ...names: string[]): [string, string] | undefined {
  for (const name of names) {
    const v = env[name];
    if (v !== undefined && v.trim() !== "") return [name, v];
  }
  return undefined;
}

/**
 * The proxy for connections to `server`, or undefined to dial it directly.
 * `flag` (--proxy) replaces the *_PROXY variables; NO_PROXY applies to both.
 */
export function proxyFor(
  server: URL,
  flag: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): EgressProxy | undefined {
  const secure = server.protocol === "https:" || server.protocol === "wss:";
  const chosen: [string, string] | undefined =
    flag !== undefined
      ? ["--proxy", flag]
      : secure
        ? firstSet(env, "https_proxy", "HTTPS_PROXY")
        : firstSet(env, "http_proxy", "HTTP_PROXY");
  if (!chosen) return undefined;
  const proxy = parseProxyUrl(chosen[1], chosen[0]);
  const noProxy = firstSet(env, "no_proxy", "NO_PROXY")?.[1];
  const port = server.port || (secure ? "443" : "80");
  if (parseNoProxy(noProxy).bypasses(server.hostname, port)) return undefined;
  return proxy;
}

/** What Node's http client hands a `createConnection`: the destination and its TLS options. */
type DialOptions = ConnectionOptions & {
  host?: string | null;
  hostname?: string | null;
  port?: number | string | null;
};

/** Node's asynchronous form: the socket is handed to `oncreate`. */
export type CreateConnection = NonNullable<ClientRequestArgs["createConnection"]>;

function printable(s: string, max = 120): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is removed
  return s.replace(/[\x00-\x1f\x7f]/g, " ").slice(0, max);
}

/** The error for a CONNECT answered with `status`: says which proxy and what to do. */
function refusal(proxy: EgressProxy, target: string, status: number, reason: string): ProxyError {
  const answer = `${status}${reason ? ` ${printable(reason)}` : ""}`;
  // Some proxies (tinyproxy) answer wrong credentials with 401: before TLS only the proxy can be speaking.
  if (status === 407 || status === 401) {
    return new ProxyError(
      ERR_PROXY_AUTH,
      proxy.authorization
        ? `the egress proxy ${proxy.display} (${proxy.source}) refused the credentials in its URL (${answer}): check the user and password`
        : `the egress proxy ${proxy.display} (${proxy.source}) wants credentials (${answer}): give them in the URL, http://user:password@host:port`,
    );
  }
  if (status === 403) {
    return new ProxyError(
      ERR_PROXY_FORBIDDEN,
      `the egress proxy ${proxy.display} (${proxy.source}) forbids CONNECT to ${target} (${answer}): ask its administrators to allow it, or exempt ${target} with NO_PROXY if it is reachable directly`,
    );
  }
  return new ProxyError(
    ERR_PROXY_REFUSED,
    `the egress proxy ${proxy.display} (${proxy.source}) answered CONNECT ${target} with ${answer}: check that it can reach tether-server (--server)`,
  );
}

/**
 * Opens a CONNECT tunnel to host:port through `proxy` and resolves with the
 * raw tunnel socket. Bounded by `timeoutMs` from the first byte to the answer.
 */
export function openTunnel(
  proxy: EgressProxy,
  host: string,
  port: number,
  timeoutMs = DEFAULT_PROXY_TIMEOUT_MS,
): Promise<Socket> {
  const target = `${isIP(host) === 6 ? `[${host}]` : host}:${port}`;
  return new Promise((resolve, reject) => {
    const socket: Socket =
      proxy.protocol === "https:"
        ? tlsConnect({
            host: proxy.hostname,
            port: proxy.port,
            ...(isIP(proxy.hostname) ? {} : { servername: proxy.hostname }),
            ALPNProtocols: ["http/1.1"],
          })
        : netConnect({ host: proxy.hostname, port: proxy.port });
    let head = Buffer.alloc(0);
    let settled = false;
    const fail = (err: ProxyError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    const timer = setTimeout(
      () =>
        fail(
          new ProxyError(
            ERR_PROXY_TIMEOUT,
            `the egress proxy ${proxy.display} (${proxy.source}) did not open a tunnel to ${target} within ${Math.round(timeoutMs / 1000)} s: check that the proxy is up and can reach tether-server`,
          ),
        ),
      timeoutMs,
    );
    const onError = (err: NodeJS.ErrnoException) =>
      fail(
        new ProxyError(
          ERR_PROXY_UNREACHABLE,
          `cannot reach the egress proxy ${proxy.display} (${proxy.source}): ${err.code ?? err.message}; check its address and that this pod may reach it`,
        ),
      );
    const onClose = () =>
      fail(
        new ProxyError(
          ERR_PROXY_REFUSED,
          `the egress proxy ${proxy.display} (${proxy.source}) closed the connection before answering CONNECT ${target}`,
        ),
      );
    // Paused-mode reads: what is not read stays in the socket for TLS.
    const onReadable = () => {
      let chunk: Buffer | null;
      // biome-ignore lint/suspicious/noAssignInExpressions: the usual read loop
      while (!settled && (chunk = socket.read() as Buffer | null) !== null) {
        head = Buffer.concat([head, chunk]);
        answer();
      }
    };
    const answer = () => {
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) {
        if (head.length > MAX_REPLY_HEAD) {
          fail(
            new ProxyError(
              ERR_PROXY_REFUSED,
              `the egress proxy ${proxy.display} (${proxy.source}) sent more than ${MAX_REPLY_HEAD} bytes without ending its answer to CONNECT`,
            ),
          );
        }
        return;
      }
      const statusLine = head.subarray(0, head.indexOf("\r\n")).toString("latin1");
      const m = /^HTTP\/1\.[01] (\d{3}) ?(.*)$/.exec(statusLine);
      if (!m) {
        fail(
          new ProxyError(
            ERR_PROXY_REFUSED,
            `the egress proxy ${proxy.display} (${proxy.source}) did not answer CONNECT in HTTP: "${printable(statusLine, 60)}" — is it an HTTP proxy?`,
          ),
        );
        return;
      }
      const status = Number(m[1]);
      if (status < 200 || status > 299) {
        fail(refusal(proxy, target, status, m[2] ?? ""));
        return;
      }
      // The server speaks only after the agent's TLS hello: a byte before it is not the server's.
      if (head.length > end + 4) {
        fail(
          new ProxyError(
            ERR_PROXY_REFUSED,
            `the egress proxy ${proxy.display} (${proxy.source}) sent data after its answer to CONNECT ${target}, before TLS began`,
          ),
        );
        return;
      }
      settled = true;
      clearTimeout(timer);
      socket.off("readable", onReadable);
      socket.off("error", onError);
      socket.off("close", onClose);
      resolve(socket);
    };
    socket.on("error", onError);
    socket.on("close", onClose);
    socket.once(proxy.protocol === "https:" ? "secureConnect" : "connect", () => {
      const lines = [`CONNECT ${target} HTTP/1.1`, `Host: ${target}`];
      if (proxy.authorization) lines.push(`Proxy-Authorization: ${proxy.authorization}`);
      socket.write(`${lines.join("\r\n")}\r\n\r\n`);
      socket.on("readable", onReadable);
    });
  });
}

/**
 * A `createConnection` for Node's https client and ws: a CONNECT tunnel
 * through `proxy`, then TLS to the destination inside it with the request's
 * own TLS options (CA, client certificate, server name).
 */
export function connectThrough(proxy: EgressProxy, timeoutMs = DEFAULT_PROXY_TIMEOUT_MS): CreateConnection {
  return (args, callback) => {
    const options = args as DialOptions;
    const host = String(options.hostname ?? options.host ?? "localhost").replace(/^\[|\]$/g, "");
    const port = Number(options.port ?? 443);
    openTunnel(proxy, host, port, timeoutMs).then(
      (raw) => {
        // `path` would make tls.connect dial a Unix socket, `timeout` would outlive the handshake.
        const {
          host: _h,
          hostname: _n,
          port: _p,
          path: _path,
          timeout: _t,
          ...tls
        } = options as DialOptions & {
          path?: unknown;
          timeout?: unknown;
        };
        const secure: TLSSocket = tlsConnect({
          ...tls,
          socket: raw,
          // The certificate is checked against `host` (else against "localhost", for an IP literal
          // that gets no SNI); SNI carries names only.
          host,
          ...(options.servername === undefined && !isIP(host) ? { servername: host } : {}),
        });
        callback(null, secure);
      },
      (err: Error) => callback(err, undefined as never),
    );
    return undefined;
  };
}
