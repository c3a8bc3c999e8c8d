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
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { Agent as HttpsAgent, request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { bindTetherAdmins, prepareMember } from "../test/e2e/fixture.js";
import { startClusters } from "../test/kube/index.js";
import { startTetherPath } from "./e2e.js";
import { profileFor } from "./inspector-profile.js";

const { values } = parseArgs({
  options: {
    requests: { type: "string", default: "2000" },
    profile: { type: "string" },
    strace: { type: "string" },
  },
});
const requests = Number(values.requests);
const TICK_MS = 1000 / 100; // USER_HZ on Linux

/** utime + stime of a process in ms. */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * TICK_MS;
}

function get(base: string, agent: HttpsAgent, token: string, url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${base}${url}`,
      { agent, headers: { authorization: `Bearer ${token}`, accept: "application/json" } },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end();
  });
}

const dir = await mkdtemp(join(tmpdir(), "tether-get-cost-"));
const set = await startClusters(1, { names: ["bench"] });
try {
  const member = set.clusters[0]!;
  await bindTetherAdmins(member);
  const saDir = join(dir, "sa");
  const env = await prepareMember(member, saDir);
  const path = await startTetherPath(join(dir, "plain"), env, saDir, ["--no-metrics"]);
  try {
    const base = `${path.url}/clusters/bench`;
    const agent = new HttpsAgent({ keepAlive: true, maxSockets: 1, ca: path.caPem });
    const end = Date.now() + 30_000;
    while ((await get(base, agent, path.token, "/api").catch(() => 0)) !== 200) {
      if (Date.now() > end) throw new Error(`the agent did not connect; log:\n${path.agent.logTail()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const small = "/api/v1/namespaces/default";
    for (let i = 0; i < 200; i++) await get(base, agent, path.token, small);
    const pids = { server: path.serverPid, agent: path.agent.pid! };
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
      for (let i = 0; i < requests; i++) await get(base, agent, path.token, small);
      for (const t of tracers) t.kill("SIGINT");
      await Promise.all(tracers.map((t) => new Promise((r) => t.once("exit", r))));
    }
    const before = { server: cpuMs(pids.server), agent: cpuMs(pids.agent) };
    const walls: number[] = [];
    const t0 = performance.now();
    for (let i = 0; i < requests; i++) {
      const t = performance.now();
      const status = await get(base, agent, path.token, small);
      walls.push(performance.now() - t);
      if (status !== 200) throw new Error(`GET ${small} → ${status}`);
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
    if (values.profile) {
      await mkdir(values.profile, { recursive: true });
      for (const [name, pid] of Object.entries(pids)) {
        let stop = false;
        const load = (async () => {
          while (!stop) await get(base, agent, path.token, small);
        })();
        await profileFor(pid, 10_000, join(values.profile, `${name}.cpuprofile`));
        stop = true;
        await load;
      }
    }
    agent.destroy();
  } finally {
    await path.stop();
  }
} finally {
  await set.stop();
  await rm(dir, { recursive: true, force: true });
}
