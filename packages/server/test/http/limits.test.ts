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
    shutdownDelayMs: 5_000,
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

t.test("the shutdown delay may be 0 and is counted within the grace", async (t) => {
  t.equal(resolveLimits({ shutdownDelayMs: 0 }).shutdownDelayMs, 0, "0: the listener closes at once");
  t.equal(resolveLimits({ shutdownGraceMs: 3000, shutdownDelayMs: 2999 }).shutdownDelayMs, 2999);
  for (const [grace, delay] of [
    [3000, 3000],
    [3000, 5000],
    [1, 1],
  ] as const) {
    t.throws(
      () => resolveLimits({ shutdownGraceMs: grace, shutdownDelayMs: delay }),
      {
        code: ERR_TETHER_INVALID_LIMIT,
        message: /shutdown delay .* must be shorter than the shutdown grace/,
      },
      `delay ${delay} ms, grace ${grace} ms`,
    );
  }
  t.throws(
    () => resolveLimits({ shutdownGraceMs: 3000 }),
    { message: /lower --shutdown-delay or raise --shutdown-grace/ },
    "a grace below the default delay is refused too, saying which flag to change",
  );
  for (const bad of [-1, 0.5, Number.NaN]) {
    t.throws(() => resolveLimits({ shutdownDelayMs: bad }), { code: ERR_TETHER_INVALID_LIMIT }, String(bad));
  }
  t.throws(
    () => resolveLimits({ shutdownGraceMs: 0 }),
    { code: ERR_TETHER_INVALID_LIMIT },
    "the grace may not be 0",
  );
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
  // Where 0 is a value (--shutdown-delay): written as such, never a fraction rounded down to it.
  for (const zero of ["0", "0s", "0ms", "0.0"]) t.equal(parseDuration(zero, true), 0, zero);
  for (const bad of ["0.0001", "0.4ms", "-0", "", "5d"]) {
    t.throws(
      () => parseDuration(bad, true),
      { code: ERR_TETHER_INVALID_LIMIT },
      `zero allowed: ${JSON.stringify(bad)}`,
    );
  }
  t.equal(formatDuration(0), "0s");
  t.equal(parseDuration(formatDuration(0), true), 0);
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
    "--shutdown-delay",
    "1500ms",
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
    shutdownDelayMs: 1500,
    maxAgentsPerCluster: 2,
    http2MaxStreamsPerConnection: 16,
    maxStreamsPerAgent: 20_000,
  });
  t.throws(() => parse(["--http2-max-streams-per-connection", String(2 ** 32)]), /at most 4294967295/);
  t.throws(() => parse(["--headers-timeout", "soon"]), /is not a duration/);
  t.throws(() => parse(["--max-connections", "0"]), /not a positive integer/);
  t.equal(parse(["--shutdown-delay", "0"]).shutdownDelayMs, 0, "--shutdown-delay 0: no delay");
  t.throws(() => parse(["--shutdown-grace", "0"]), /out of range/, "the grace takes no 0");
  t.throws(
    () => parse(["--shutdown-grace", "3s"]),
    /the shutdown delay \(5s\) must be shorter than the shutdown grace \(3s\)/,
    "the default delay and a shorter grace: refused at start-up",
  );
  t.throws(() => parse(["--shutdown-grace", "10s", "--shutdown-delay", "10s"]), /must be shorter/);
  t.throws(
    () => parse(["--headers-timeout", "10m"]),
    /may not exceed the request timeout/,
    "a head may not take longer than the whole request (Node would refuse to start)",
  );
});
