/**
 * `tsx --conditions=tether-source bench/list-cost.ts [--mib N] [--rounds N] [--profile DIR]`:
 * what one large LIST (N MiB of ConfigMaps, filled as bench/e2e.ts fills
 * them) costs each process per MiB, in CPU time: server, agent and the
 * kube-apiserver from /proc/<pid>/stat (in all, and the kernel's part),
 * direct and through Tether, rounds interleaved so that drift on a shared
 * machine hits both alike. Wall MB/s
 * is printed beside it but moves with the load; CPU per MiB barely does.
 * The Mark-Compacts and Scavenges of server and agent are counted too (their
 * main-thread time, wall, and Mark-Compacts per 64 MiB): much of a large
 * body's cost is theirs, on helper threads a CPU profile does not show.
 * With --profile, CPU profiles of the server and then of the agent while
 * LISTs run through Tether (summarise with cpu-profile-summary.ts).
 */
import { parseArgs } from "node:util";
import { cpuTimes, gcCounter, get, profileUnderLoad, withCostSetup } from "./cost-harness.js";
import { fillList, LIST_NAMESPACE } from "./e2e.js";

const { values } = parseArgs({
  options: {
    mib: { type: "string", default: "32" },
    rounds: { type: "string", default: "5" },
    profile: { type: "string" },
  },
});
const rounds = Number(values.rounds);
const list = `/api/v1/namespaces/${LIST_NAMESPACE}/configmaps`;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const round1 = (x: number) => Math.round(x * 10) / 10;

await withCostSetup("list-cost", async ({ member, direct, tether, pids }) => {
  await fillList(member, Number(values.mib));
  const paths = { direct, tether };
  // The processes each path crosses; the apiserver serves both.
  const crossed = { direct: ["apiserver"], tether: ["apiserver", "server", "agent"] } as const;
  const cpu = new Map<string, { user: number; system: number }>();
  const rates = { direct: [] as number[], tether: [] as number[] };
  let bytes = 0;
  let gcs:
    | { server: Awaited<ReturnType<typeof gcCounter>>; agent: Awaited<ReturnType<typeof gcCounter>> }
    | undefined;
  // Round 0 warms both paths (the apiserver's caches, the connections) and is not counted.
  for (let round = 0; round <= rounds; round++) {
    for (const name of ["direct", "tether"] as const) {
      const before = crossed[name].map((p) => cpuTimes(pids[p]));
      const t0 = performance.now();
      const res = await get(paths[name], list);
      const s = (performance.now() - t0) / 1000;
      if (res.status !== 200) throw new Error(`${name}: LIST → ${res.status}`);
      if (round === 0) {
        // Counted from the first measured round on (the Tether rounds only cross server and agent).
        if (name === "tether")
          gcs = { server: await gcCounter(pids.server), agent: await gcCounter(pids.agent) };
        continue;
      }
      bytes = res.bytes;
      rates[name].push(res.bytes / s / 1e6);
      crossed[name].forEach((p, i) => {
        const now = cpuTimes(pids[p]);
        const sum = cpu.get(`${name}_${p}`) ?? { user: 0, system: 0 };
        sum.user += now.user - before[i]!.user;
        sum.system += now.system - before[i]!.system;
        cpu.set(`${name}_${p}`, sum);
      });
    }
  }
  const mib = (bytes / 2 ** 20) * rounds;
  const result: Record<string, number> = { list_mib: round1(bytes / 2 ** 20), rounds };
  for (const [key, { user, system }] of cpu) {
    result[`${key}_cpu_ms_per_mib`] = round1((user + system) / mib);
    result[`${key}_system_ms_per_mib`] = round1(system / mib);
  }
  for (const p of ["server", "agent"] as const) {
    const gc = await gcs![p].read();
    result[`tether_${p}_major_gcs_per_64mib`] = round1((gc.major * 64) / mib);
    result[`tether_${p}_gc_ms_per_mib`] = round1((gc.majorMs + gc.minorMs) / mib);
  }
  result.direct_mbps = round1(median(rates.direct));
  result.tether_mbps = round1(median(rates.tether));
  console.log(JSON.stringify(result));
  if (values.profile) {
    await profileUnderLoad(values.profile, { server: pids.server, agent: pids.agent }, () =>
      get(tether, list),
    );
  }
});
