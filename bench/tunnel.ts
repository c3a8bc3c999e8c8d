/**
 * The tunnel suite: the tunnel (wss, mutual processes) against a direct TLS
 * connection between the same two processes, on loopback and through a
 * 50 ms-RTT delay proxy. The server end and the agent end each run in their
 * own child process (tunnel-peer.ts), the delay proxy in a third, so no two
 * parties share an event loop. Data flows agent → server, the WebSocket's
 * masked client→server direction, which is what response bodies take.
 */

import { type ChildProcess, execFileSync, fork, spawn } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { deadSession } from "./dead-session.js";
import type { SuiteOptions, SuiteResult } from "./run.js";
import { shapedLink } from "./shaped-link.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const MiB = 1024 * 1024;

class Peer {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  readonly ready: Promise<unknown>;

  constructor(readonly child: ChildProcess) {
    let ready!: (v: unknown) => void;
    this.ready = new Promise((r) => (ready = r));
    child.on("message", (msg: { id: number; result?: unknown; error?: string }) => {
      if (msg.id === 0) return ready(msg.result);
      const w = this.waiting.get(msg.id);
      this.waiting.delete(msg.id);
      if (msg.error !== undefined) w?.reject(new Error(msg.error));
      else w?.resolve(msg.result);
    });
  }

  call<T>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child.send({ id, cmd, ...args });
    });
  }
}

function startPeer(role: "server" | "agent", certDir: string): Peer {
  const child = fork(path.join(here, "tunnel-peer.ts"), [role, certDir], {
    execArgv: ["--import", "tsx"],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  return new Peer(child);
}

async function startProxy(
  delayMs: number,
  targets: number[],
): Promise<{ ports: number[]; child: ChildProcess }> {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", path.join(here, "delay-proxy.ts"), String(delayMs), ...targets.map((t) => `0:${t}`)],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const [line] = (await once(child.stdout!, "data")) as [Buffer];
  const ports = line.toString().trim().split(" ").slice(1).map(Number);
  return { ports, child };
}

function makeCert(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tether-bench-"));
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-days",
      "1",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
      "-keyout",
      path.join(dir, "key.pem"),
      "-out",
      path.join(dir, "cert.pem"),
    ],
    { stdio: "ignore" },
  );
  return dir;
}

const median = (xs: number[]) => quantile(xs, 0.5);
function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}
const fmt = (n: number, digits = 2) => n.toFixed(digits);
const step = (what: string) => process.stderr.write(`  .. ${what}\n`);

/**
 * TETHER_BENCH_CPU_PROF=<dir>: after the measured throughput runs, profile
 * both peers through one more loopback transfer of 256 MiB per path (direct
 * TLS, then the tunnel), each in its own profile:
 * <dir>/{server,agent}-{direct,tunnel}.cpuprofile.
 * Summarise with `tsx bench/cpu-profile-summary.ts <dir>/*.cpuprofile`.
 * The profiled runs are not part of any figure.
 */
const profileDir = process.env.TETHER_BENCH_CPU_PROF || undefined;

async function profileThroughput(dir: string, peers: Peer[], directPort: number) {
  const size = 256 * MiB;
  fs.mkdirSync(dir, { recursive: true });
  const agent = peers[1]!;
  for (const mode of ["direct", "tunnel"] as const) {
    await Promise.all(peers.map((p) => p.call("profileStart")));
    await agent.call("throughput", { mode, port: directPort, size });
    const files = await Promise.all(peers.map((p) => p.call<string>("profileStop", { dir, name: mode })));
    step(`profiled ${mode}: ${files.join(" ")}`);
  }
}

/** Scenarios of the suite, in the order they run; `--only` picks some (e.g. `--only rtt50`). */
export const SCENARIOS = [
  "loopback",
  "hol",
  "rtt",
  "zero-mask",
  "rtt50",
  "memory",
  "shaped",
  "dead",
] as const;
type Scenario = (typeof SCENARIOS)[number];

export async function run({ quick, only }: SuiteOptions): Promise<SuiteResult> {
  const unknown = (only ?? []).filter((s) => !(SCENARIOS as readonly string[]).includes(s));
  if (unknown.length > 0) {
    throw new Error(`unknown tunnel scenario ${unknown.join(", ")}; scenarios: ${SCENARIOS.join(", ")}`);
  }
  const want = (s: Scenario) => only === undefined || only.includes(s);
  const size = (quick ? 16 : 64) * MiB;
  const repeats = quick ? 1 : 3;
  const rttCount = quick ? 300 : 2000;
  const certDir = makeCert();
  const server = startPeer("server", certDir);
  const agent = startPeer("agent", certDir);
  const children: ChildProcess[] = [server.child, agent.child];
  const rows: Array<[string, string, string]> = [];
  const m: Record<string, number | string | null> = {};
  try {
    await Promise.all([server.ready, agent.ready]);
    step("peers up");
    const ports = await server.call<{ direct: number; tunnel: number }>("ports");
    const proxy = await startProxy(25, [ports.direct, ports.tunnel]);
    children.push(proxy.child);
    const [slowDirect, slowTunnel] = proxy.ports as [number, number];

    step("proxy up");
    // Warm up both paths (JIT, TLS session state), then interleave the runs so drift hits both alike.
    await agent.call("connect", { port: ports.tunnel });
    await agent.call("throughput", { mode: "direct", port: ports.direct, size: 8 * MiB });
    await agent.call("throughput", { mode: "tunnel", size: 8 * MiB });
    const mbps = (seconds: number, bytes = size) => bytes / MiB / seconds;
    step("warmed up");
    // Every loopback figure is over this, the median of the direct runs.
    const direct: number[] = [];
    if (want("loopback")) {
      const tunnel: number[] = [];
      // CPU both ends spent per GiB moved: wall-clock throughput swings with whatever else
      // the machine runs, the work each path does per byte much less.
      const directCpu: number[] = [];
      const tunnelCpu: number[] = [];
      const cpuNow = async () => (await agent.call<number>("cpu")) + (await server.call<number>("cpu"));
      const measured = async (args: Record<string, unknown>, cpu: number[]) => {
        const before = await cpuNow();
        const seconds = await agent.call<number>("throughput", args);
        cpu.push((await cpuNow()) - before);
        return mbps(seconds);
      };
      for (let i = 0; i < repeats; i++) {
        direct.push(await measured({ mode: "direct", port: ports.direct, size }, directCpu));
        tunnel.push(await measured({ mode: "tunnel", size }, tunnelCpu));
      }

      step("throughput done");
      if (profileDir !== undefined) await profileThroughput(profileDir, [server, agent], ports.direct);
      Object.assign(m, {
        throughput_direct_mib_s: median(direct),
        throughput_tunnel_mib_s: median(tunnel),
        throughput_ratio: median(tunnel) / median(direct),
        cpu_direct_s_per_gib: median(directCpu) / (size / 2 ** 30),
        cpu_tunnel_s_per_gib: median(tunnelCpu) / (size / 2 ** 30),
        cpu_ratio: median(tunnelCpu.map((c, i) => c / directCpu[i]!)),
      });
      rows.push(
        [
          "throughput_ratio",
          fmt(median(tunnel) / median(direct)),
          `tunnel ${fmt(median(tunnel), 0)} / direct TLS ${fmt(median(direct), 0)} MiB/s, ${size / MiB} MiB, median of ${repeats} (target >= 0.85)`,
        ],
        [
          "cpu_ratio",
          fmt(m.cpu_ratio as number),
          `CPU per GiB, both ends: tunnel ${fmt(m.cpu_tunnel_s_per_gib as number)} / direct ${fmt(m.cpu_direct_s_per_gib as number)} s (lower is better)`,
        ],
      );
    }

    if (want("hol")) {
      // Head-of-line: B alone vs B while A's reader is stalled, same session, same size. Run
      // in pairs whose order alternates (so neither side always runs first), after one
      // unmeasured pair; the ratio is the median of the per-pair ratios.
      const holSize = (quick ? 16 : 64) * MiB;
      const holPairs = quick ? 3 : 7;
      const alone: number[] = [];
      const blocked: number[] = [];
      const holRatios: number[] = [];
      let stalledCredit = 0;
      const runAlone = async () =>
        mbps(await agent.call<number>("throughput", { mode: "tunnel", size: holSize }), holSize);
      const runBlocked = async () => {
        const hol = await agent.call<{ seconds: number; stalledCredit: number }>("headOfLine", {
          size: holSize,
        });
        stalledCredit = hol.stalledCredit;
        return mbps(hol.seconds, holSize);
      };
      await runAlone();
      await runBlocked();
      for (let i = 0; i < holPairs; i++) {
        let a: number;
        let b: number;
        if (i % 2 === 0) {
          a = await runAlone();
          b = await runBlocked();
        } else {
          b = await runBlocked();
          a = await runAlone();
        }
        alone.push(a);
        blocked.push(b);
        holRatios.push(b / a);
      }
      step("head-of-line done");
      Object.assign(m, {
        hol_alone_mib_s: median(alone),
        hol_blocked_mib_s: median(blocked),
        hol_ratio: median(holRatios),
        hol_ratio_min: Math.min(...holRatios),
        hol_ratio_max: Math.max(...holRatios),
        hol_stalled_stream_credit_left: stalledCredit,
      });
      rows.push([
        "hol_ratio",
        fmt(median(holRatios)),
        `stream B ${fmt(median(blocked), 0)} MiB/s with A's reader stalled / ${fmt(median(alone), 0)} alone, median of ${holPairs} pairs (${fmt(Math.min(...holRatios))}..${fmt(Math.max(...holRatios))}) (target >= 0.9)`,
      ]);
    }

    if (want("rtt")) {
      // Small round trips.
      const rttDirect = await agent.call<number[]>("roundTrips", {
        mode: "direct",
        port: ports.direct,
        count: rttCount,
      });
      const rttTunnel = await agent.call<number[]>("roundTrips", { mode: "tunnel", count: rttCount });
      step("round trips done");
      Object.assign(m, {
        rtt_direct_p50_ms: quantile(rttDirect, 0.5),
        rtt_direct_p99_ms: quantile(rttDirect, 0.99),
        rtt_tunnel_p50_ms: quantile(rttTunnel, 0.5),
        rtt_tunnel_p99_ms: quantile(rttTunnel, 0.99),
        rtt_p50_ratio: quantile(rttTunnel, 0.5) / quantile(rttDirect, 0.5),
        rtt_p99_ratio: quantile(rttTunnel, 0.99) / quantile(rttDirect, 0.99),
      });
      rows.push(
        [
          "rtt_p50_ratio",
          fmt(m.rtt_p50_ratio as number),
          `tunnel ${fmt(quantile(rttTunnel, 0.5), 3)} ms / direct ${fmt(quantile(rttDirect, 0.5), 3)} ms, 64-byte echo x${rttCount}`,
        ],
        [
          "rtt_p99_ratio",
          fmt(m.rtt_p99_ratio as number),
          `tunnel ${fmt(quantile(rttTunnel, 0.99), 3)} ms / direct ${fmt(quantile(rttDirect, 0.99), 3)} ms`,
        ],
      );
    }

    if (want("zero-mask")) {
      // The same with an all-zero masking key (opt-in trade-off, see tunnel-peer.ts).
      await agent.call("connect", { port: ports.tunnel, zeroMask: true });
      await agent.call("throughput", { mode: "tunnel", size: 8 * MiB });
      const zeroMask: number[] = [];
      for (let i = 0; i < repeats; i++) {
        zeroMask.push(mbps(await agent.call<number>("throughput", { mode: "tunnel", size })));
      }
      if (direct.length === 0)
        direct.push(
          mbps(await agent.call<number>("throughput", { mode: "direct", port: ports.direct, size })),
        );
      Object.assign(m, {
        throughput_zero_mask_tunnel_mib_s: median(zeroMask),
        throughput_ratio_zero_mask: median(zeroMask) / median(direct),
      });
      rows.push([
        "throughput_ratio_zero_mask",
        fmt(median(zeroMask) / median(direct)),
        `opt-in all-zero WebSocket mask: tunnel ${fmt(median(zeroMask), 0)} MiB/s (not the default)`,
      ]);
    }

    if (want("rtt50")) {
      // The 50 ms link: a new tunnel session through the proxy. The first stream on a
      // fresh session ramps up (reported as "cold"); then both paths are warmed like
      // the loopback ones and measured with the learned window. The tunnel's bytes
      // flow agent → server on a stream the server opened, as response bodies do
      // (server "pull"); the same on streams the agent opens, which in production
      // carry only renewals, is reported beside it ("agent_opened": such a stream
      // waits a round trip for the acceptor's ACK to grant more than 256 KiB).
      //
      // The direct baseline is a best case, never slowed: the proxy reads ahead of
      // the 50 ms (up to 32 MiB per direction), so the direct connection's TCP runs
      // at loopback RTT, without slow start or a window to fill across the 50 ms,
      // while the tunnel's credit and in-flight cap must span the whole round trip.
      const slowSize = (quick ? 16 : 64) * MiB;
      const pull = async () => mbps(await server.call<number>("pull", { size: slowSize }), slowSize);
      const pushed = async () =>
        mbps(await agent.call<number>("throughput", { mode: "tunnel", size: slowSize }), slowSize);
      await agent.call("connect", { port: slowTunnel });
      const coldAgentOpened = await pushed();
      await agent.call("connect", { port: slowTunnel });
      const cold = await pull();
      await agent.call("throughput", { mode: "direct", port: slowDirect, size: 8 * MiB });
      const directSlow: number[] = [];
      const tunnelSlow: number[] = [];
      const agentOpenedSlow: number[] = [];
      for (let i = 0; i < (quick ? 1 : 2); i++) {
        directSlow.push(
          mbps(
            await agent.call<number>("throughput", { mode: "direct", port: slowDirect, size: slowSize }),
            slowSize,
          ),
        );
        tunnelSlow.push(await pull());
        agentOpenedSlow.push(await pushed());
      }
      step("50 ms link done");
      Object.assign(m, {
        throughput_rtt50_direct_mib_s: median(directSlow),
        throughput_rtt50_tunnel_mib_s: median(tunnelSlow),
        throughput_ratio_rtt50: median(tunnelSlow) / median(directSlow),
        throughput_rtt50_cold_tunnel_mib_s: cold,
        throughput_ratio_rtt50_cold: cold / median(directSlow),
        throughput_ratio_rtt50_agent_opened: median(agentOpenedSlow) / median(directSlow),
        throughput_ratio_rtt50_cold_agent_opened: coldAgentOpened / median(directSlow),
      });
      rows.push(
        [
          "throughput_ratio_rtt50",
          fmt(median(tunnelSlow) / median(directSlow)),
          `tunnel ${fmt(median(tunnelSlow), 0)} / direct TLS ${fmt(median(directSlow), 0)} MiB/s through a 50 ms RTT proxy (target >= 0.85)`,
        ],
        [
          "throughput_ratio_rtt50_cold",
          fmt(cold / median(directSlow)),
          `first stream of a fresh session: ${fmt(cold, 0)} MiB/s (target >= 0.8)`,
        ],
        [
          "throughput_ratio_rtt50_agent_opened",
          fmt(median(agentOpenedSlow) / median(directSlow)),
          `the same on agent-opened streams (production: renewals only): warm ${fmt(median(agentOpenedSlow), 0)}, cold ${fmt(coldAgentOpened / median(directSlow))} (${fmt(coldAgentOpened, 0)} MiB/s)`,
        ],
      );
      // Back to loopback for what follows.
      await agent.call("connect", { port: ports.tunnel });
      while ((await server.call<number>("sessionCount")) > 1) await new Promise((r) => setTimeout(r, 50));
    }

    if (want("memory")) {
      // Memory: idle streams on one session, then idle sessions (each its own wss connection), server side.
      const streamCount = quick ? 2000 : 10_000;
      const idle = await server.call<{ before: number; after: number }>("idleStreams", {
        count: streamCount,
      });
      const perStream = (idle.after - idle.before) / streamCount;
      step("idle streams done");
      const sessionCount = quick ? 200 : 1000;
      const before = await server.call<number>("memoryNow");
      await agent.call("sessions", { count: sessionCount, port: ports.tunnel });
      while ((await server.call<number>("sessionCount")) < sessionCount + 1)
        await new Promise((r) => setTimeout(r, 50));
      const after = await server.call<number>("memoryNow");
      const perSession = (after - before) / sessionCount;
      await agent.call("closeSessions");
      Object.assign(m, {
        bytes_per_idle_stream: Math.round(perStream),
        bytes_per_idle_session: Math.round(perSession),
      });
      rows.push(
        [
          "bytes_per_idle_stream",
          String(Math.round(perStream)),
          `server side, heap+external after GC, ${streamCount} streams on one session`,
        ],
        [
          "bytes_per_idle_session",
          String(Math.round(perSession)),
          `server side, incl. its wss connection (TLS + ws), ${sessionCount} sessions`,
        ],
      );
    }

    if (want("shaped")) {
      const shaped = await shapedLink(quick, agent, server, ports.tunnel);
      step("shaped links done");
      Object.assign(m, shaped.metrics);
      rows.push(...shaped.rows);
    }
    if (want("dead")) {
      const dead = await deadSession();
      step("dead session done");
      Object.assign(m, dead.metrics);
      rows.push(...dead.rows);
    }
    return { rows, metrics: m };
  } finally {
    for (const c of children) c.kill();
    fs.rmSync(certDir, { recursive: true, force: true });
  }
}
