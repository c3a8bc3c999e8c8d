/**
 * `npm run bench -- <suite> [--quick] [--json] [--agents N[,M...]] [--only scenario,...]`. Suites register below; each
 * returns rows for a readable table and a flat map of metrics. With --json the
 * metrics are printed as one JSON object on the last line of stdout.
 */

import { parseArgs } from "node:util";

export interface SuiteOptions {
  quick: boolean;
  /** --agents N[,M...]: the scale suite's fleet sizes instead of its levels. */
  agents?: number[];
  /** --store kubernetes: the scale suite's server on a harness host cluster instead of the file store. */
  store?: "file" | "kubernetes";
  /** --only a,b: run only these scenarios of the suite (the tunnel suite lists its names). */
  only?: string[];
}

export interface SuiteResult {
  /** Human-readable rows: [metric, value, note]. */
  rows: Array<[string, string, string]>;
  /** Null where a measurement did not happen (a string key then says why). */
  metrics: Record<string, number | string | null>;
}

type Suite = (options: SuiteOptions) => Promise<SuiteResult>;

const suites: Record<string, () => Promise<Suite>> = {
  tunnel: async () => (await import("./tunnel.js")).run,
  e2e: async () => (await import("./e2e.js")).run,
  scale: async () => (await import("./scale.js")).run,
  replicas: async () => (await import("./replicas.js")).run,
};

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    quick: { type: "boolean", default: false },
    json: { type: "boolean", default: false },
    agents: { type: "string" },
    store: { type: "string" },
    only: { type: "string" },
  },
});
const name = positionals[0];
const load = name === undefined ? undefined : suites[name];
if (load === undefined) {
  console.error(
    `usage: npm run bench -- <${Object.keys(suites).join("|")}> [--quick] [--json] [--agents N[,M...]] [--store file|kubernetes] [--only scenario,...]`,
  );
  process.exit(2);
}
const agents = values.agents?.split(",").map(Number);
if (
  agents !== undefined &&
  !agents.every((n, i) => Number.isInteger(n) && n > 0 && n > (agents[i - 1] ?? 0))
) {
  console.error(
    "--agents is a whole number of agents, or rising numbers: --agents 10000, --agents 2000,5000",
  );
  process.exit(2);
}
if (values.store !== undefined && values.store !== "file" && values.store !== "kubernetes") {
  console.error("--store is file or kubernetes");
  process.exit(2);
}
const store = values.store as SuiteOptions["store"];
const only = values.only?.split(",").filter((s) => s.length > 0);
const result = await (await load())({
  quick: values.quick,
  ...(only === undefined ? {} : { only }),
  ...(agents === undefined ? {} : { agents }),
  ...(store === undefined ? {} : { store }),
});
const widths = [0, 1, 2].map((i) => Math.max(...result.rows.map((r) => r[i]!.length), 6));
console.log(`\n${name}${values.quick ? " (quick)" : ""}`);
for (const row of result.rows) {
  console.log(`  ${row[0].padEnd(widths[0]!)}  ${row[1].padStart(widths[1]!)}  ${row[2]}`);
}
if (values.json) console.log(JSON.stringify({ suite: name, quick: values.quick, ...result.metrics }));
process.exit(0);
