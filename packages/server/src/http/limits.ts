// Every bound tether-server puts on what one caller, one source address or
// one connection may hold: the defaults, the `serve` flag of each, and their
// validation, in one place (docs/security-model.md "Limits" lists them).

export interface Limits {
  /** Concurrent requests and upgrades one caller holds on one cluster; the excess gets 429. */
  maxStreamsPerCaller: number;
  /** An upgraded connection (exec, attach, port-forward) with no bytes either way this long is closed. */
  streamIdleTimeoutMs: number;
  /** A request head must be complete this long after its first byte (slowloris); the connection is closed. */
  headersTimeoutMs: number;
  /** A request must have arrived whole (head and body) this long after it began; it gets 408. Responses (watches) are not bounded. */
  requestTimeoutMs: number;
  /** A connection with no request in flight — a fresh one too — is closed after this long. */
  idleTimeoutMs: number;
  /** A TLS handshake must finish this long after the TCP connection opened. */
  tlsHandshakeTimeoutMs: number;
  /** Connections beyond this many (agents' tunnels included) are closed as they arrive. */
  maxConnections: number;
  /** Connections one source address (IPv4 address, IPv6 /64) may hold at once; more are closed as they arrive. */
  maxConnectionsPerSource: number;
  /** Failed authentications or joins per source address within authFailureWindowMs before it gets 429. */
  authFailureLimit: number;
  authFailureWindowMs: number;
  /** On SIGTERM, how long requests and upgrades in flight may run before they are cut (lifecycle/drain.ts). */
  shutdownGraceMs: number;
  /**
   * On SIGTERM, how long the server keeps serving callers (readiness false, new agents refused) before
   * it closes its listener, within shutdownGraceMs; 0 closes it at once.
   */
  shutdownDelayMs: number;
  /** Agent sessions one cluster may hold at once (redundant agents); the oldest beyond it is drained. */
  maxAgentsPerCluster: number;
  /** Concurrent streams one HTTP/2 connection may hold (its SETTINGS_MAX_CONCURRENT_STREAMS); more are refused. */
  http2MaxStreamsPerConnection: number;
  /** Streams open at once on one agent's tunnel session, both directions (the tunnel's maxStreams); more are refused. */
  maxStreamsPerAgent: number;
}

export const ERR_TETHER_INVALID_LIMIT = "ERR_TETHER_INVALID_LIMIT";

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  // Well below the tunnel's 1,024 streams per session: one caller cannot fill a cluster.
  maxStreamsPerCaller: 128,
  // The kubelet's streamingConnectionIdleTimeout.
  streamIdleTimeoutMs: 4 * 3600_000,
  headersTimeoutMs: 30_000,
  // Node's own default: no Kubernetes client takes minutes to send a request body.
  requestTimeoutMs: 300_000,
  // Above client-go's 90 s IdleConnTimeout would keep idle connections for nothing; below it the server
  // would close connections a client is about to reuse.
  idleTimeoutMs: 90_000,
  tlsHandshakeTimeoutMs: 10_000,
  maxConnections: 10_000,
  // One host cannot fill --max-connections by itself; member agents behind one NAT hold one each.
  maxConnectionsPerSource: 1_000,
  authFailureLimit: 20,
  authFailureWindowMs: 10_000,
  // Kubernetes' default terminationGracePeriodSeconds is 30: the rest is for closing the sessions and exiting.
  shutdownGraceMs: 25_000,
  // A terminating pod leaves the Service's endpoints at once, but kube-proxy and load balancers take a
  // moment to act on it (one with health checks of its own: until /readyz has failed them); until then
  // they still send connections, which a closed listener would reset.
  shutdownDelayMs: 5_000,
  // Two agent replicas per member, each with room to replace its session while the old one drains.
  maxAgentsPerCluster: 4,
  // Go's HTTP/2 server default, which kube-apiserver serves with: client-go opens a second connection beyond it.
  http2MaxStreamsPerConnection: 250,
  // The tunnel's own default: every watch through a member holds one stream for as long as it runs.
  maxStreamsPerAgent: 1024,
});

export interface LimitFlag {
  key: keyof Limits;
  flag: string;
  kind: "count" | "duration";
  help: string;
  /** 0 is a value (off), not only positive numbers. */
  zero?: true;
}

/** The `serve` flag of each limit, in the order `--help` and the docs list them. */
export const LIMIT_FLAGS: readonly LimitFlag[] = [
  {
    key: "maxStreamsPerCaller",
    flag: "--max-streams-per-caller <n>",
    kind: "count",
    help: "concurrent requests and upgrades one caller may hold on one cluster (the excess gets 429)",
  },
  {
    key: "streamIdleTimeoutMs",
    flag: "--stream-idle-timeout <duration>",
    kind: "duration",
    help: "close an exec/attach/port-forward connection with no traffic either way for this long",
  },
  {
    key: "headersTimeoutMs",
    flag: "--headers-timeout <duration>",
    kind: "duration",
    help: "close a connection whose request head is not complete this long after it began",
  },
  {
    key: "requestTimeoutMs",
    flag: "--request-timeout <duration>",
    kind: "duration",
    help: "answer 408 to a request (head and body) not received whole this long after it began; responses such as watches are not bounded",
  },
  {
    key: "idleTimeoutMs",
    flag: "--idle-timeout <duration>",
    kind: "duration",
    help: "close a connection with no request in flight (a fresh one too) after this long",
  },
  {
    key: "tlsHandshakeTimeoutMs",
    flag: "--tls-handshake-timeout <duration>",
    kind: "duration",
    help: "close a connection whose TLS handshake has not finished this long after it opened",
  },
  {
    key: "maxConnections",
    flag: "--max-connections <n>",
    kind: "count",
    help: "refuse connections beyond this many (agents' tunnels included)",
  },
  {
    key: "maxConnectionsPerSource",
    flag: "--max-connections-per-source <n>",
    kind: "count",
    help: "refuse connections beyond this many from one source address (IPv4 address, IPv6 /64)",
  },
  {
    key: "authFailureLimit",
    flag: "--auth-failure-limit <n>",
    kind: "count",
    help: "failed authentications or joins one source address may make per --auth-failure-window (then 429)",
  },
  {
    key: "authFailureWindowMs",
    flag: "--auth-failure-window <duration>",
    kind: "duration",
    help: "the window of --auth-failure-limit",
  },
  {
    key: "shutdownGraceMs",
    flag: "--shutdown-grace <duration>",
    kind: "duration",
    help: "on SIGTERM, how long requests and upgrades in flight may finish before they are cut (watches end at once, cleanly)",
  },
  {
    key: "shutdownDelayMs",
    flag: "--shutdown-delay <duration>",
    kind: "duration",
    help: "on SIGTERM, keep serving callers this long (readiness 503, new agents refused) before the listener closes; counted within --shutdown-grace, 0 for none",
    zero: true,
  },
  {
    key: "maxAgentsPerCluster",
    flag: "--max-agents-per-cluster <n>",
    kind: "count",
    help: "agent sessions one cluster may hold at once (redundant agents); a session beyond it drains the oldest",
  },
  {
    key: "http2MaxStreamsPerConnection",
    flag: "--http2-max-streams-per-connection <n>",
    kind: "count",
    help: "concurrent streams one HTTP/2 connection may hold; the client opens another connection or waits",
  },
  {
    key: "maxStreamsPerAgent",
    flag: "--max-streams-per-agent <n>",
    kind: "count",
    help: "streams (requests, watches, upgrades) open at once on one agent's tunnel; more are refused with 503",
  },
];

function invalid(message: string): never {
  throw Object.assign(new TypeError(message), { code: ERR_TETHER_INVALID_LIMIT });
}

// Node's timers hold at most 2^31-1 ms; a larger value would fire at once.
const MAX_DURATION_MS = 2 ** 31 - 1;

/** The limits that may be 0 (off). */
const ZERO_ALLOWED: ReadonlySet<keyof Limits> = new Set(LIMIT_FLAGS.filter((f) => f.zero).map((f) => f.key));

/**
 * The defaults with `overrides` applied; every limit must be a positive
 * integer (a duration in ms), or 0 where its flag says so.
 */
export function resolveLimits(overrides: Partial<Limits> = {}): Limits {
  const limits = { ...DEFAULT_LIMITS };
  for (const [key, value] of Object.entries(overrides) as [keyof Limits, unknown][]) {
    if (!Object.hasOwn(DEFAULT_LIMITS, key)) invalid(`unknown limit ${JSON.stringify(key)}`);
    if (value === undefined) continue;
    const max = key.endsWith("Ms") ? MAX_DURATION_MS : Number.MAX_SAFE_INTEGER;
    const min = ZERO_ALLOWED.has(key) ? 0 : 1;
    if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
      invalid(`limit ${key} must be an integer from ${min} to ${max}, not ${String(value)}`);
    }
    limits[key] = value;
  }
  // The SETTINGS field is 32 bits.
  if (limits.http2MaxStreamsPerConnection > 2 ** 32 - 1) {
    invalid(`limit http2MaxStreamsPerConnection must be at most ${2 ** 32 - 1}`);
  }
  // The tunnel refuses a session with more (options.ts): it would fail at each agent's connect, not here.
  if (limits.maxStreamsPerAgent > 2 ** 30) invalid(`limit maxStreamsPerAgent must be at most ${2 ** 30}`);
  // Node refuses a server whose head may take longer than the whole request.
  if (limits.headersTimeoutMs > limits.requestTimeoutMs) {
    invalid(
      `the headers timeout (${formatDuration(limits.headersTimeoutMs)}) may not exceed the request timeout (${formatDuration(limits.requestTimeoutMs)})`,
    );
  }
  // The delay is the first part of the grace: a delay as long would leave the drain no time at all.
  if (limits.shutdownDelayMs >= limits.shutdownGraceMs) {
    invalid(
      `the shutdown delay (${formatDuration(limits.shutdownDelayMs)}) must be shorter than the shutdown grace (${formatDuration(limits.shutdownGraceMs)}), which counts it: lower --shutdown-delay or raise --shutdown-grace`,
    );
  }
  return limits;
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3600_000 };

/**
 * A duration as Go and kubectl write them ("90s", "4h", "1h30m", "500ms"), or
 * a bare number of seconds as the other `serve` flags take; returns ms. 0
 * ("0", "0s") only with `allowZero`.
 */
export function parseDuration(text: string, allowZero = false): number {
  const s = text.trim();
  let ms: number;
  if (/^\d+(\.\d+)?$/.test(s)) {
    ms = Number(s) * 1000;
  } else {
    if (!/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(s)) {
      invalid(`"${text.slice(0, 40)}" is not a duration (e.g. 30s, 10m, 4h, 1h30m, 500ms)`);
    }
    ms = 0;
    for (const [, n, unit] of s.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) ms += Number(n) * UNIT_MS[unit!]!;
  }
  // Zero written as such, not a fraction of a millisecond rounded down to it.
  if (allowZero && ms === 0) return 0;
  ms = Math.round(ms);
  if (ms < 1 || ms > MAX_DURATION_MS)
    invalid(`"${text.slice(0, 40)}" is out of range (${allowZero ? "0, " : ""}1ms to 596h)`);
  return ms;
}

/** `ms` in the largest unit that holds it whole ("4h", "90s", "500ms"); `parseDuration` reads it back. */
export function formatDuration(ms: number): string {
  if (ms === 0) return "0s";
  for (const [unit, size] of [
    ["h", 3600_000],
    ["m", 60_000],
    ["s", 1000],
  ] as const) {
    if (ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

/** A count flag's value: a positive integer. */
export function parseCount(text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n < 1) {
    invalid(`"${text.slice(0, 40)}" is not a positive integer`);
  }
  return n;
}
