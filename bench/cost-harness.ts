/**
 * What get-cost.ts and list-cost.ts share: one harness cluster with a
 * Tether path (server and agent as processes, bench/e2e.ts startTetherPath)
 * in front of it, the pids of the three processes a request crosses, their
 * CPU time from /proc, a request that counts the body's bytes, and CPU
 * profiles of server and agent under a load the caller keeps up.
 */
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { Agent as HttpsAgent, request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bindTetherAdmins, prepareMember } from "../test/e2e/fixture.js";
import { type Cluster, startClusters } from "../test/kube/index.js";
import { startTetherPath } from "./e2e.js";
import { profileFor } from "./inspector-profile.js";

const TICK_MS = 1000 / 100; // USER_HZ on Linux

/** utime + stime of a process in ms. */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * TICK_MS;
}

/** One way to the apiserver: a base URL, its bearer token and a keep-alive client of one connection. */
export interface CostPath {
  base: string;
  token: string;
  agent: HttpsAgent;
}

/** GETs `url` and reads its body to the end: its status and how many bytes it had. */
export function get(path: CostPath, url: string): Promise<{ status: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${path.base}${url}`,
      { agent: path.agent, headers: { authorization: `Bearer ${path.token}`, accept: "application/json" } },
      (res) => {
        let bytes = 0;
        res.on("data", (c: Buffer) => {
          bytes += c.length;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, bytes }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end();
  });
}

export interface CostSetup {
  member: Cluster;
  direct: CostPath;
  tether: CostPath;
  pids: { server: number; agent: number; apiserver: number };
}

/** The pid of the harness's kube-apiserver among the processes the set started. */
function apiserverPid(pids: number[]): number {
  for (const pid of pids) {
    try {
      const argv0 = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0] ?? "";
      if (argv0.endsWith("kube-apiserver")) return pid;
    } catch {}
  }
  throw new Error(`no kube-apiserver among the harness's processes ${pids.join(", ")}`);
}

/** Runs `body` with a cluster and a Tether path to it whose agent has connected; stops both after. */
export async function withCostSetup(name: string, body: (s: CostSetup) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), `tether-${name}-`));
  const set = await startClusters(1, { names: ["bench"] });
  try {
    const member = set.clusters[0]!;
    await bindTetherAdmins(member);
    const saDir = join(dir, "sa");
    const env = await prepareMember(member, saDir);
    const path = await startTetherPath(join(dir, "plain"), env, saDir, ["--no-metrics"]);
    const keepAlive = (ca: string) => new HttpsAgent({ keepAlive: true, maxSockets: 1, ca });
    const tether = { base: `${path.url}/clusters/bench`, token: path.token, agent: keepAlive(path.caPem) };
    const direct = { base: member.server, token: member.admin.token, agent: keepAlive(member.caPem) };
    try {
      const end = Date.now() + 30_000;
      while ((await get(tether, "/api").catch(() => ({ status: 0 }))).status !== 200) {
        if (Date.now() > end) throw new Error(`the agent did not connect; log:\n${path.agent.logTail()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      const pids = { server: path.serverPid, agent: path.agent.pid!, apiserver: apiserverPid(set.pids) };
      await body({ member, direct, tether, pids });
    } finally {
      tether.agent.destroy();
      direct.agent.destroy();
      await path.stop();
    }
  } finally {
    await set.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

/** A CPU profile of each of `pids` in turn (10 s each, DIR/<name>.cpuprofile) while `load` runs requests. */
export async function profileUnderLoad(
  dir: string,
  pids: Record<string, number>,
  load: () => Promise<unknown>,
  ms = 10_000,
): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const [name, pid] of Object.entries(pids)) {
    let stop = false;
    const running = (async () => {
      while (!stop) await load();
    })();
    await profileFor(pid, ms, join(dir, `${name}.cpuprofile`));
    stop = true;
    await running;
  }
}
