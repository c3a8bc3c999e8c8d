import { Command } from "commander";
import t from "tap";
import { addLimitOptions, limitsFromOptions } from "../../src/cli/limit-options.js";
import {
  DEFAULT_LIMITS,
  ERR_TETHER_INVALID_LIMIT,
  formatDuration,
  LIMIT_FLAGS,
  parseCount,
  parseDuration,
  resolveLimits,
} from "../../src/http/limits.js";

t.test("the defaults are the team's", async (t) => {
  t.same(resolveLimits(), {
    maxStreamsPerCaller: 128,
    streamIdleTimeoutMs: 4 * 3600_000,
    headersTimeoutMs: 30_000,
    requestTimeoutMs: 300_000,
    idleTimeoutMs: 90_000,
    tlsHandshakeTimeoutMs: 10_000,
    maxConnections: 10_000,
    maxConnectionsPerSource: 1_000,
    authFailureLimit: 20,
    authFailureWindowMs: 10_000,
    shutdownGraceMs: 25_000,
    maxAgentsPerCluster: 4,
    http2MaxStreamsPerConnection: 250,
    maxStreamsPerAgent: 1024,
  });
  t.throws(() => {
    (DEFAULT_LIMITS as { maxConnections: number }).maxConnections = 1;
  }, "the defaults cannot be changed in place");
});

t.test("a tunnel's streams are bounded as the tunnel bounds them", async (t) => {
  t.equal(resolveLimits({ maxStreamsPerAgent: 2 ** 30 }).maxStreamsPerAgent, 2 ** 30);
  t.throws(() => resolveLimits({ maxStreamsPerAgent: 2 ** 30 + 1 }), { code: "ERR_TETHER_INVALID_LIMIT" });
});

t.test("overrides must be positive integers of known limits", async (t) => {
  t.equal(resolveLimits({ maxConnections: 5 }).maxConnections, 5);
  t.equal(resolveLimits({ maxConnections: undefined }).maxConnections, 10_000);
  for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, "5" as unknown as number]) {
    t.throws(() => resolveLimits({ maxConnections: bad }), { code: ERR_TETHER_INVALID_LIMIT }, String(bad));
  }
  t.throws(
    () => resolveLimits({ idleTimeoutMs: 2 ** 31 }),
    { code: ERR_TETHER_INVALID_LIMIT },
    "past a timer's range",
  );
  t.throws(() => resolveLimits({ nope: 1 } as never), { code: ERR_TETHER_INVALID_LIMIT });
});

t.test("durations read as Go and kubectl write them, or as seconds", async (t) => {
  const cases: [string, number][] = [
    ["30s", 30_000],
    ["90s", 90_000],
    ["4h", 4 * 3600_000],
    ["1h30m", 90 * 60_000],
    ["500ms", 500],
    ["1.5s", 1500],
    ["10", 10_000],
    ["0.25", 250],
  ];
  for (const [text, ms] of cases) t.equal(parseDuration(text), ms, text);
  for (const bad of ["", "0", "0s", "5d", "s", "-1s", "1h 30m", "1e3", "999999h"]) {
    t.throws(() => parseDuration(bad), { code: ERR_TETHER_INVALID_LIMIT }, JSON.stringify(bad));
  }
  for (const ms of [500, 10_000, 90_000, 4 * 3600_000, 1500]) t.equal(parseDuration(formatDuration(ms)), ms);
  t.equal(formatDuration(4 * 3600_000), "4h");
  t.equal(formatDuration(90_000), "90s");
  t.equal(parseCount("128"), 128);
  for (const bad of ["0", "-3", "1.5", "x", ""])
    t.throws(() => parseCount(bad), { code: ERR_TETHER_INVALID_LIMIT });
});

t.test("every limit has one flag, and the flags fill the limits", async (t) => {
  t.same(LIMIT_FLAGS.map((f) => f.key).sort(), Object.keys(DEFAULT_LIMITS).sort());
  const parse = (args: string[]) => {
    const cmd = addLimitOptions(new Command("serve").exitOverride().configureOutput({ writeErr: () => {} }));
    cmd.parse(args, { from: "user" });
    return limitsFromOptions(cmd.opts());
  };
  t.same(parse([]), DEFAULT_LIMITS, "no flags: the defaults");
  const set = parse([
    "--max-streams-per-caller",
    "3",
    "--stream-idle-timeout",
    "2s",
    "--headers-timeout",
    "1s",
    "--request-timeout",
    "3s",
    "--idle-timeout",
    "2",
    "--tls-handshake-timeout",
    "500ms",
    "--max-connections",
    "40",
    "--max-connections-per-source",
    "20",
    "--auth-failure-limit",
    "5",
    "--auth-failure-window",
    "1m",
    "--shutdown-grace",
    "5s",
    "--max-agents-per-cluster",
    "2",
    "--http2-max-streams-per-connection",
    "16",
    "--max-streams-per-agent",
    "20000",
  ]);
  t.same(set, {
    maxStreamsPerCaller: 3,
    streamIdleTimeoutMs: 2000,
    headersTimeoutMs: 1000,
    requestTimeoutMs: 3000,
    idleTimeoutMs: 2000,
    tlsHandshakeTimeoutMs: 500,
    maxConnections: 40,
    maxConnectionsPerSource: 20,
    authFailureLimit: 5,
    authFailureWindowMs: 60_000,
    shutdownGraceMs: 5000,
    maxAgentsPerCluster: 2,
    http2MaxStreamsPerConnection: 16,
    maxStreamsPerAgent: 20_000,
  });
  t.throws(() => parse(["--http2-max-streams-per-connection", String(2 ** 32)]), /at most 4294967295/);
  t.throws(() => parse(["--headers-timeout", "soon"]), /is not a duration/);
  t.throws(() => parse(["--max-connections", "0"]), /not a positive integer/);
  t.throws(
    () => parse(["--headers-timeout", "10m"]),
    /may not exceed the request timeout/,
    "a head may not take longer than the whole request (Node would refuse to start)",
  );
});
