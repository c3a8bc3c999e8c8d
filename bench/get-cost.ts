/**
 * `tsx --conditions=tether-source bench/get-cost.ts [--requests N] [--profile DIR]`:
 * what one small GET through Tether costs each process, measured in CPU
 * time, not wall time: on a shared two-core machine the latency of a GET is
 * mostly waiting for a core, while the CPU each hop spends per request is
 * what a change to the data path can cut, and it barely moves with the load.
 * Sequential GETs as the e2e suite sends them (one keep-alive HTTP/1.1
 * connection), server and agent CPU from /proc/<pid>/stat before and after;
 * with --profile, a CPU profile of the server and then of the agent over
 * a second batch (inspector-profile.ts; summarise with cpu-profile-summary.ts);
 * with --strace, a count of each process's system calls over a batch before (strace -c;
 * GET_COST_STRACE="-e trace=write,read -s 0" lists each call instead).
 */
import { spawn } from "node:child_process";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { cpuMs, get, profileUnderLoad, withCostSetup } from "./cost-harness.js";

const { values } = parseArgs({
  options: {
    requests: { type: "string", default: "2000" },
    profile: { type: "string" },
    strace: { type: "string" },
  },
});
const requests = Number(values.requests);

await withCostSetup("get-cost", async ({ tether: path, pids: all }) => {
  const small = "/api/v1/namespaces/default";
  const status = async () => (await get(path, small)).status;
  for (let i = 0; i < 200; i++) await status();
  const pids = { server: all.server, agent: all.agent };
  // --strace DIR: the system calls each process makes over a separate batch (strace slows them down).
  if (values.strace) {
    await mkdir(values.strace, { recursive: true });
    const tracers = Object.entries(pids).map(([name, pid]) =>
      spawn(
        "strace",
        [
          ...(process.env.GET_COST_STRACE?.split(" ") ?? ["-c"]),
          "-f",
          "-o",
          join(values.strace!, `${name}.txt`),
          "-p",
          String(pid),
        ],
        {
          stdio: "ignore",
        },
      ),
    );
    await new Promise((r) => setTimeout(r, 1000));
    for (let i = 0; i < requests; i++) await status();
    for (const t of tracers) t.kill("SIGINT");
    await Promise.all(tracers.map((t) => new Promise((r) => t.once("exit", r))));
  }
  const before = { server: cpuMs(pids.server), agent: cpuMs(pids.agent) };
  const walls: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < requests; i++) {
    const t = performance.now();
    const code = await status();
    walls.push(performance.now() - t);
    if (code !== 200) throw new Error(`GET ${small} → ${code}`);
  }
  const elapsed = performance.now() - t0;
  walls.sort((a, b) => a - b);
  const result = {
    requests,
    server_cpu_us_per_get: Math.round(((cpuMs(pids.server) - before.server) * 1000) / requests),
    agent_cpu_us_per_get: Math.round(((cpuMs(pids.agent) - before.agent) * 1000) / requests),
    wall_p50_ms: Math.round(walls[Math.floor(walls.length / 2)]! * 1000) / 1000,
    elapsed_s: Math.round(elapsed) / 1000,
  };
  console.log(JSON.stringify(result));
  if (values.profile) await profileUnderLoad(values.profile, pids, status);
});
