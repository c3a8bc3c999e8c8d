/**
 * `tsx bench/tunnel-ab.ts [--size MiB] [--rounds N] [--profile dir [--perf]] <tree>...`: only the
 * loopback throughput scenario of the tunnel suite, for bisecting and
 * before/after comparisons. Each <tree> is a checkout (or an extract of
 * packages/tunnel/src and bench/tunnel-peer.ts) with its own peers; the
 * rounds alternate between trees, direct TLS then tunnel each time, so drift
 * in the machine's load hits every tree alike. Reports per tree the median
 * throughput ratio and the median CPU ratio (CPU of both ends per byte,
 * tunnel ÷ direct, each pair measured back to back), the figure least swayed
 * by other load.
 *
 * A tree of another commit, for bisecting:
 *   mkdir t && git archive <commit> packages/tunnel bench/tunnel-peer.ts | tar -x -C t
 *   echo '{"type":"module"}' > t/package.json && ln -s "$PWD/node_modules" t/node_modules
 *
 * --profile <dir>: afterwards one more transfer per path and tree with both
 * ends under the inspector's CPU profiler (<dir>/<tree>/{agent,server}-
 * {direct,tunnel}.cpuprofile, see cpu-profile-summary.ts); with --perf under
 * `perf record -g` instead (.perf files: native code and the kernel too, which
 * the inspector shows only as "(program)" or inside writeBuffer).
 * AB_PEER_ARGS: extra node flags for the peers (e.g. --trace-gc).
 */

import { type ChildProcess, execFileSync, fork, spawn } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";

const MiB = 1024 * 1024;
const { values, positionals: trees } = parseArgs({
  allowPositionals: true,
  options: {
    size: { type: "string", default: "64" },
    rounds: { type: "string", default: "5" },
    profile: { type: "string" },
    perf: { type: "boolean", default: false },
  },
});
const size = Number(values.size) * MiB;
const rounds = Number(values.rounds);

class Peer {
  private nextId = 1;
  private readonly waiting = new Map<number, (v: { result?: unknown; error?: string }) => void>();
  readonly ready: Promise<unknown>;
  constructor(readonly child: ChildProcess) {
    let ready!: (v: unknown) => void;
    this.ready = new Promise((r) => (ready = r));
    child.on("message", (msg: { id: number; result?: unknown; error?: string }) => {
      if (msg.id === 0) return ready(msg.result);
      this.waiting.get(msg.id)?.(msg);
      this.waiting.delete(msg.id);
    });
  }
  call<T>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, (m) =>
        m.error !== undefined ? reject(new Error(m.error)) : resolve(m.result as T),
      );
      this.child.send({ id, cmd, ...args });
    });
  }
}

const certDir = fs.mkdtempSync(path.join(os.tmpdir(), "tether-ab-"));
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
    path.join(certDir, "key.pem"),
    "-out",
    path.join(certDir, "cert.pem"),
  ],
  { stdio: "ignore" },
);

const children: ChildProcess[] = [];
const start = (tree: string, role: string) => {
  const child = fork(path.join(tree, "bench", "tunnel-peer.ts"), [role, certDir], {
    execArgv: ["--import", "tsx", ...(process.env.AB_PEER_ARGS?.split(" ").filter(Boolean) ?? [])],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  children.push(child);
  return new Peer(child);
};

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const load = () =>
  os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");

try {
  const setups = await Promise.all(
    trees.map(async (tree) => {
      const server = start(tree, "server");
      const agent = start(tree, "agent");
      await Promise.all([server.ready, agent.ready]);
      const ports = await server.call<{ direct: number; tunnel: number }>("ports");
      await agent.call("connect", { port: ports.tunnel });
      await agent.call("throughput", { mode: "direct", port: ports.direct, size: 8 * MiB });
      await agent.call("throughput", { mode: "tunnel", size: 8 * MiB });
      return { tree, server, agent, ports, tput: [] as number[], cpu: [] as number[], cpuT: [] as number[] };
    }),
  );
  console.error(`load at start: ${load()}`);
  for (let r = 0; r < rounds; r++) {
    for (const s of r % 2 === 0 ? setups : [...setups].reverse()) {
      const cpu = async () => (await s.agent.call<number>("cpu")) + (await s.server.call<number>("cpu"));
      // The server's GCs (it receives the bulk): undefined for a peer without the handler.
      const gcs = () => s.server.call<{ major: number; minor: number }>("gcs").catch(() => undefined);
      const one = async (args: Record<string, unknown>) => {
        const [c0, g0] = [await cpu(), await gcs()];
        const seconds = await s.agent.call<number>("throughput", args);
        const [c1, g1] = [await cpu(), await gcs()];
        const gc = g0 && g1 ? `${g1.major - g0.major}/${g1.minor - g0.minor}` : "?";
        return { seconds, cpu: c1 - c0, gc };
      };
      const d = await one({ mode: "direct", port: s.ports.direct, size });
      const t = await one({ mode: "tunnel", size });
      s.tput.push(d.seconds / t.seconds);
      s.cpu.push(t.cpu / d.cpu);
      s.cpuT.push(t.cpu / (size / 2 ** 30));
      console.error(
        `  ${path.basename(s.tree)} round ${r}: direct ${(size / MiB / d.seconds).toFixed(0)} tunnel ${(size / MiB / t.seconds).toFixed(0)} MiB/s, cpu tunnel ${(t.cpu / (size / 2 ** 30)).toFixed(2)} direct ${(d.cpu / (size / 2 ** 30)).toFixed(2)} s/GiB, server GCs major/minor tunnel ${t.gc} direct ${d.gc}, load ${load()}`,
      );
    }
  }
  for (const s of setups) {
    console.log(
      `${s.tree}: throughput_ratio ${median(s.tput).toFixed(2)} (${s.tput.map((x) => x.toFixed(2)).join(" ")}) cpu_ratio ${median(s.cpu).toFixed(2)} (${s.cpu.map((x) => x.toFixed(2)).join(" ")}) tunnel cpu ${median(s.cpuT).toFixed(2)} s/GiB`,
    );
  }
  console.log(`load at end: ${load()}`);
  // --profile <dir>: one more transfer per path and tree, each end profiled (not part of any figure).
  if (values.profile !== undefined) {
    for (const s of setups) {
      const dir = path.join(values.profile, path.basename(s.tree));
      fs.mkdirSync(dir, { recursive: true });
      for (const mode of ["direct", "tunnel"] as const) {
        if (values.perf) {
          // perf's view (native code, the kernel) of the same transfer, one file per end.
          const perfs = [s.agent, s.server].map((p, i) =>
            spawn(
              "perf",
              [
                "record",
                "-q",
                "-F",
                "4000",
                "-g",
                "-p",
                String(p.child.pid),
                "-o",
                path.join(dir, `${i === 0 ? "agent" : "server"}-${mode}.perf`),
              ],
              { stdio: "ignore" },
            ),
          );
          await new Promise((r) => setTimeout(r, 2000));
          await s.agent.call("throughput", { mode, port: s.ports.direct, size });
          for (const p of perfs) p.kill("SIGINT");
          await Promise.all(perfs.map((p) => once(p, "exit")));
          continue;
        }
        await Promise.all([s.agent, s.server].map((p) => p.call("profileStart")));
        await s.agent.call("throughput", { mode, port: s.ports.direct, size });
        await Promise.all([s.agent, s.server].map((p) => p.call("profileStop", { dir, name: mode })));
      }
      console.log(`profiles in ${dir}`);
    }
  }
} finally {
  for (const c of children) c.kill();
  fs.rmSync(certDir, { recursive: true, force: true });
}
process.exit(0);
