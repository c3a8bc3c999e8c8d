/**
 * `npm run bench -- replicas [--quick] [--json]`: what the one forwarded hop
 * between tether-server replicas costs a caller. The replica tests' fleet
 * (test/e2e/replica-fleet.ts: three replicas on the Kubernetes store of a real
 * host cluster, behind HAProxy, members with real agents) answers small GETs
 * of /clusters/m1/version through the replica that holds m1's tunnel and
 * through one that forwards them one hop to it, alternating request by
 * request on one kept-alive connection each, so both see the same machine.
 *
 * Keys: replica_owner_get_p50_ms / _p99_ms, replica_hop_get_p50_ms / _p99_ms,
 * replica_hop_added_p50_ms (hop p50 − owner p50) and replica_hop_ratio_p50.
 */
import { Agent } from "node:https";
import { performance } from "node:perf_hooks";
import type { Test } from "tap";
import { type Replica, startFleet, status } from "../test/e2e/replica-fleet.js";
import type { SuiteOptions, SuiteResult } from "./run.js";

/** The two calls of tap's Test that startFleet makes, for a run outside tap. */
function benchTest(cleanups: Array<() => unknown>): Test {
  const shim = {
    teardown: (fn: () => unknown) => cleanups.push(fn),
    equal: (found: unknown, wanted: unknown, message?: string) => {
      if (found !== wanted)
        throw new Error(`fleet set-up: ${message || `${String(found)} !== ${String(wanted)}`}`);
    },
  };
  return shim as unknown as Test;
}

const quantile = (xs: number[], q: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * q))] ?? Number.NaN;

export async function run(options: SuiteOptions): Promise<SuiteResult> {
  const rounds = options.quick ? 100 : 1_000;
  const cleanups: Array<() => unknown> = [];
  try {
    console.error("  .. starting the host cluster, two members and three replicas");
    const fleet = await startFleet(benchTest(cleanups));
    const owner = fleet.byId(await fleet.holderOf("m1"));
    if (!owner) throw new Error("m1 has no owner replica");
    const other = await fleet.notOwner("m1");
    const agents = new Map<Replica, Agent>([
      [owner, new Agent({ keepAlive: true, maxSockets: 1 })],
      [other, new Agent({ keepAlive: true, maxSockets: 1 })],
    ]);
    const samples = new Map<Replica, number[]>([
      [owner, []],
      [other, []],
    ]);
    const get = async (r: Replica, record: boolean) => {
      const start = performance.now();
      const code = await status(`${r.url}/clusters/m1/version`, {
        ca: fleet.ca.certPem,
        token: fleet.tokens.m1!,
        agent: agents.get(r)!,
      });
      const ms = performance.now() - start;
      if (code !== 200) throw new Error(`GET /clusters/m1/version through ${r.id} answered ${code}`);
      if (record) samples.get(r)!.push(ms);
    };
    console.error(`  .. ${rounds} GETs through each, alternating`);
    for (let i = 0; i < 20; i++) {
      await get(owner, false);
      await get(other, false);
    }
    for (let i = 0; i < rounds; i++) {
      // Alternate which goes first, so neither always follows the other's work.
      const pair = i % 2 === 0 ? [owner, other] : [other, owner];
      for (const r of pair) await get(r, true);
    }
    for (const a of agents.values()) a.destroy();
    const direct = samples.get(owner)!;
    const hop = samples.get(other)!;
    const metrics = {
      replica_owner_get_p50_ms: quantile(direct, 0.5),
      replica_owner_get_p99_ms: quantile(direct, 0.99),
      replica_hop_get_p50_ms: quantile(hop, 0.5),
      replica_hop_get_p99_ms: quantile(hop, 0.99),
      replica_hop_added_p50_ms: quantile(hop, 0.5) - quantile(direct, 0.5),
      replica_hop_ratio_p50: quantile(hop, 0.5) / quantile(direct, 0.5),
    };
    const ms = (x: number) => `${x.toFixed(2)} ms`;
    const rows: SuiteResult["rows"] = [
      [
        "replica_owner_get_p50_ms",
        ms(metrics.replica_owner_get_p50_ms),
        `p99 ${ms(metrics.replica_owner_get_p99_ms)}; GET /version through the replica holding m1 (${owner.id})`,
      ],
      [
        "replica_hop_get_p50_ms",
        ms(metrics.replica_hop_get_p50_ms),
        `p99 ${ms(metrics.replica_hop_get_p99_ms)}; through ${other.id}, one mTLS hop to ${owner.id}`,
      ],
      [
        "replica_hop_added_p50_ms",
        ms(metrics.replica_hop_added_p50_ms),
        `ratio ${metrics.replica_hop_ratio_p50.toFixed(2)}; ${rounds} each, alternating, one kept-alive connection each`,
      ],
    ];
    return { rows, metrics };
  } finally {
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
  }
}
