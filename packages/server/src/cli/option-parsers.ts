// Parsers and shared options for tether-server's flags: each turns a bad value
// into commander's InvalidArgumentError, so the message names the flag.

import { InvalidArgumentError, Option } from "commander";
import { parseDuration } from "../http/limits.js";

export function seconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError("must be a number of seconds");
  return n;
}

export function positiveDuration(value: string): number {
  try {
    const ms = parseDuration(value);
    if (ms > 0) return ms;
  } catch {}
  throw new InvalidArgumentError("must be a duration longer than 0, e.g. 30s, 2m");
}

export function listenAddress(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new InvalidArgumentError("must be host:port, e.g. 0.0.0.0:8443");
  return { host: m[1] ?? (m[2] || "0.0.0.0"), port };
}

export const collect = (value: string, previous: string[]) => [...previous, value];

export const serverOption = () =>
  new Option(
    "--server <url>",
    "tether-server's URL as agents and callers reach it (default: the URL `serve` recorded in <state-dir>/server.json; " +
      "with --credential, the URL in the credential)",
  );
