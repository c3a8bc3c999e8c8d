/**
 * `tsx --conditions=tether-source bench/list-cost.ts [--mib N] [--rounds N] [--profile DIR]`:
 * what one large LIST (N MiB of ConfigMaps, filled as bench/e2e.ts fills
 * them) costs each process per MiB, in CPU time: server, agent and the
 * kube-apiserver from /proc/<pid>/stat, direct and through Tether, rounds
 * interleaved so that drift on a shared machine hits both alike. Wall MB/s
 * is printed beside it but moves with the load; CPU per MiB barely does.
 * With --profile, CPU profiles of the server and then of the agent while
 * LISTs run through Tether (summarise with cpu-profile-summary.ts).
 */
import { parseArgs } from "node:util";
import { cpuMs, get, profileUnderLoad, withCostSetup } from "./cost-harness.js";
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
  const cpu = { direct: { apiserver: 0 }, tether: { apiserver: 0, server: 0, agent: 0 } };
  const rates = { direct: [] as number[], tether: [] as number[] };
  let bytes = 0;
  // Round 0 warms both paths (the apiserver's watch cache, the connections) and is not counted.
  for (let round = 0; round <= rounds; round++) {
    for (const name of ["direct", "tether"] as const) {
      const before = { server: cpuMs(pids.server), agent: cpuMs(pids.agent), apiserver: cpuMs(pids.apiserver) };
      const t0 = performance.now();
      const res = await get(paths[name], list);
      const s = (performance.now() - t0) / 1000;
      if (res.status !== 200) throw new Error(`${name}: LIST → ${res.status}`);
      if (round === 0) continue;
      bytes = res.bytes;
      rates[name].push(res.bytes / s / 1e6);
      const c = cpu[name] as Record<string, number>;
      for (const p of Object.keys(c)) c[p]! += cpuMs(pids[p as keyof typeof pids]) - before[p as keyof typeof before];
    }
  }
  const mib = (bytes / 2 ** 20) * rounds;
  const result = {
    list_mib: round1(bytes / 2 ** 20),
    rounds,
    direct_apiserver_cpu_ms_per_mib: round1(cpu.direct.apiserver / mib),
    tether_apiserver_cpu_ms_per_mib: round1(cpu.tether.apiserver / mib),
    tether_server_cpu_ms_per_mib: round1(cpu.tether.server / mib),
    tether_agent_cpu_ms_per_mib: round1(cpu.tether.agent / mib),
    direct_mbps: round1(median(rates.direct)),
    tether_mbps: round1(median(rates.tether)),
  };
  console.log(JSON.stringify(result));
  if (values.profile) {
    await profileUnderLoad(values.profile, { server: pids.server, agent: pids.agent }, () => get(tether, list));
  }
});
