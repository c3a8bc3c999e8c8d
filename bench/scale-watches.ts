/**
 * The scale bench's watches through one tunnel: N concurrent watches from one
 * HTTP/2 client (a connection per 250 streams, as client-go opens beyond
 * kube-apiserver's limit) on a watch source (watch-source.ts, real watch
 * JSON), first directly and then through tether-server and ONE agent, whose
 * worker process holds nothing else. With every watch open the source emits
 * ROUNDS events to all of them, ROUND_MS apart; each event's latency is from
 * its write at the source to its parse at the client. The memory a watch
 * costs is the RSS growth of the server and of the agent's process from
 * before the watches opened to when all are open, divided by N.
 */
import { type ChildProcess, fork } from "node:child_process";
import { readFileSync } from "node:fs";
import { type ClientHttp2Session, connect } from "node:http2";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { SuiteResult } from "./run.js";
import type { AgentCredentials, FromWorker, ToWorker } from "./scale-agents.js";
import { type FromSource, SENT_ANNOTATION, type ToSource } from "./watch-source.js";

const here = dirname(fileURLToPath(import.meta.url));
const PER_CONNECTION = 250;
const ROUNDS = 20;
const ROUND_MS = 500;
const OPEN_DEADLINE_MS = 240_000;
const WATCH_PATH = "/api/v1/namespaces/bench-watch/configmaps?watch=true&allowWatchBookmarks=true";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;

function rssOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function forkTs(file: string): ChildProcess {
  return fork(join(here, file), [], {
    execArgv: ["--import", "tsx", "--conditions=tether-source", "--max-old-space-size=4096"],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
}

async function until(what: string, ms: number, done: () => boolean): Promise<void> {
  const end = Date.now() + ms;
  while (!done()) {
    if (Date.now() > end) throw new Error(`${what} did not happen within ${ms / 1000} s`);
    await sleep(100);
  }
}

/** N watches from one client: counts of heads and statuses, and every event's latency. */
class WatchClient {
  private readonly sessions: ClientHttp2Session[] = [];
  latencies: number[] = [];
  heads = 0;
  ended = 0;
  readonly statuses = new Map<string, number>();

  constructor(base: string, caPem: string, n: number, headers: Record<string, string>, prefix: string) {
    for (let i = 0; i < n; i++) {
      if (i % PER_CONNECTION === 0) {
        const session = connect(base, { ca: caPem });
        session.on("error", () => {});
        this.sessions.push(session);
      }
      const stream = this.sessions.at(-1)!.request({ ":path": `${prefix}${WATCH_PATH}`, ...headers });
      stream.setEncoding("utf8");
      let partial = "";
      stream.on("response", (h) => {
        const status = String(h[":status"]);
        this.statuses.set(status, (this.statuses.get(status) ?? 0) + 1);
        if (status === "200") this.heads++;
      });
      stream.on("data", (chunk: string) => {
        const now = performance.timeOrigin + performance.now();
        const lines = (partial + chunk).split("\n");
        partial = lines.pop()!;
        for (const line of lines) {
          if (line === "") continue;
          const sent = (
            JSON.parse(line) as { object?: { metadata?: { annotations?: Record<string, string> } } }
          ).object?.metadata?.annotations?.[SENT_ANNOTATION];
          if (sent !== undefined) this.latencies.push(now - Number(sent));
        }
      });
      stream.on("close", () => this.ended++);
      stream.on("error", () => {});
    }
  }

  close(): void {
    for (const s of this.sessions) s.destroy();
  }
}

export interface WatchesSetup {
  watches: number;
  server: { url: string; pid: number };
  caPem: string;
  token: string;
  cluster: string;
  agent: AgentCredentials;
  apiserverCert: { certPem: string; keyPem: string };
}

/** Measures the watches; `metrics` gets watches_<label>_* and watch_*_bytes_each, `rows` the table. Throws what failed. */
export async function measureWatches(
  s: WatchesSetup,
  key: string,
  rows: SuiteResult["rows"],
  metrics: SuiteResult["metrics"],
): Promise<void> {
  const n = s.watches;
  const source = forkTs("watch-source.ts");
  let agentWorker: ChildProcess | undefined;
  let client: WatchClient | undefined;
  let openAtSource = 0;
  let agentConnected = 0;
  try {
    const port = await new Promise<number>((resolve, reject) => {
      source.on("message", (m: FromSource) => {
        if (m.type === "listening") resolve(m.port);
        else openAtSource = m.watches;
      });
      source.once("exit", (code) => reject(new Error(`the watch source exited (${code})`)));
      source.send({ type: "config", ...s.apiserverCert } satisfies ToSource);
    });
    const sourceUrl = `https://127.0.0.1:${port}`;

    const run = async (path: "direct" | "tether", c: WatchClient) => {
      client = c;
      await until(`${n} ${path} watches open`, OPEN_DEADLINE_MS, () => openAtSource >= n && c.heads >= n);
      const open = { server: rssOf(s.server.pid), agent: agentWorker?.pid ? rssOf(agentWorker.pid) : 0 };
      for (let seq = 0; seq < ROUNDS; seq++) {
        source.send({ type: "emit", seq } satisfies ToSource);
        await sleep(ROUND_MS);
      }
      const expected = n * ROUNDS;
      await until(`${path}: all ${expected} events`, 30_000, () => c.latencies.length >= expected).catch(
        () => {},
      );
      const sorted = Float64Array.from(c.latencies).sort();
      c.close();
      await until(`${path} watches closed at the source`, 60_000, () => openAtSource === 0);
      return { sorted, missing: expected - sorted.length, open };
    };

    const direct = await run("direct", new WatchClient(sourceUrl, s.caPem, n, {}, ""));
    metrics[`watches_${key}_direct_p50_ms`] = round(percentile(direct.sorted, 50));
    metrics[`watches_${key}_direct_p99_ms`] = round(percentile(direct.sorted, 99));
    rows.push([
      `${key} watches direct: event p50 / p99`,
      `${metrics[`watches_${key}_direct_p50_ms`]} / ${metrics[`watches_${key}_direct_p99_ms`]} ms`,
      `${direct.sorted.length} events, ${direct.missing} missing`,
    ]);

    agentWorker = forkTs("scale-agents.ts");
    agentWorker.on("message", (m: FromWorker) => {
      agentConnected = m.connected;
    });
    agentWorker.send({
      type: "config",
      server: s.server.url,
      caPem: s.caPem,
      apiserverCert: s.apiserverCert,
      targetUrl: sourceUrl,
      maxStreams: 2 * n,
    } satisfies ToWorker);
    agentWorker.send({ type: "add", agents: [s.agent], perSecond: 10 } satisfies ToWorker);
    await until("the watch agent connected", 60_000, () => agentConnected === 1);
    // The connect's own traffic (the server's /version probe) settles first.
    await sleep(3_000);
    const before = { server: rssOf(s.server.pid), agent: rssOf(agentWorker.pid!) };
    const t0 = Date.now();
    const through = await run(
      "tether",
      new WatchClient(
        s.server.url,
        s.caPem,
        n,
        { authorization: `Bearer ${s.token}` },
        `/clusters/${s.cluster}`,
      ),
    ).catch((err: Error) => {
      const statuses = JSON.stringify(Object.fromEntries(client?.statuses ?? []));
      throw new Error(
        `${err.message} (${client?.heads ?? 0} heads, statuses ${statuses}, ${openAtSource} open at the source)`,
      );
    });
    const openSeconds = (Date.now() - t0) / 1000;
    const serverEach = (through.open.server - before.server) / n;
    const agentEach = (through.open.agent - before.agent) / n;
    metrics[`watches_${key}_event_p50_ms`] = round(percentile(through.sorted, 50));
    metrics[`watches_${key}_event_p99_ms`] = round(percentile(through.sorted, 99));
    metrics[`watches_${key}_missing_events`] = through.missing;
    metrics.watch_bytes_each = Math.round(serverEach + agentEach);
    metrics.watch_server_bytes_each = Math.round(serverEach);
    metrics.watch_agent_bytes_each = Math.round(agentEach);
    rows.push([
      `${key} watches via Tether: event p50 / p99`,
      `${metrics[`watches_${key}_event_p50_ms`]} / ${metrics[`watches_${key}_event_p99_ms`]} ms`,
      `${through.sorted.length} events, ${through.missing} missing; ${ROUNDS} rounds ${ROUND_MS} ms apart; all open and one round in ${openSeconds.toFixed(1)} s`,
    ]);
    rows.push([
      "memory per watch",
      `${metrics.watch_bytes_each} B`,
      `server ${metrics.watch_server_bytes_each} B + agent process ${metrics.watch_agent_bytes_each} B (RSS, all open); the agent holds an apiserver connection per watch`,
    ]);
  } finally {
    client?.close();
    agentWorker?.send({ type: "stop" } satisfies ToWorker);
    source.send({ type: "stop" } satisfies ToSource);
    await sleep(500);
    agentWorker?.kill("SIGKILL");
    source.kill("SIGKILL");
  }
}
