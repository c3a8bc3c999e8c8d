// The server's pino logger. Secrets are redacted by key wherever they appear
// two levels deep; code that logs request headers passes them through
// `loggableHeaders`, which drops credentials and impersonation outright.
import { type Logger, type LoggerOptions, pino } from "pino";

const SECRET_KEYS = [
  "authorization",
  "proxy-authorization",
  "cookie",
  "token",
  "joinToken",
  "keyPem",
  "privateKey",
  "password",
  "impersonate-user",
  "impersonate-group",
  "impersonate-uid",
];

export const REDACT_PATHS = SECRET_KEYS.flatMap((k) => [`["${k}"]`, `*["${k}"]`, `*.*["${k}"]`]);

export function createLogger(options: LoggerOptions = {}, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      name: "tether-server",
      level: process.env.TETHER_LOG_LEVEL ?? "info",
      redact: { paths: REDACT_PATHS, censor: "[redacted]" },
      ...options,
    },
    destination as pino.DestinationStream | undefined,
  );
}

const UNLOGGABLE = /^(authorization|proxy-authorization|cookie|impersonate-.*)$/i;

/** Request headers fit for a log line: credentials and impersonation removed. */
export function loggableHeaders(
  headers: Record<string, string | string[] | undefined>,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(headers)) if (!UNLOGGABLE.test(k)) out[k] = v;
  return out;
}

/**
 * A request URL fit for a log line: the path only. Query strings carry
 * credentials (`?access_token=`, a join token pasted into a URL) and exec
 * commands; no log line needs them.
 */
export function loggablePath(url: string | undefined): string {
  const path = (url ?? "").split(/[?#]/, 1)[0]!;
  return path.length > 256 ? `${path.slice(0, 256)}…` : path;
}

export type { Logger };
