/**
 * `npm run bench -- <suite> [--quick] [--json]`. Suites register below; each
 * returns rows for a readable table and a flat map of metrics. With --json the
 * metrics are printed as one JSON object on the last line of stdout.
 */

import { parseArgs } from "node:util";

export interface SuiteOptions {
  quick: boolean;
}

export interface SuiteResult {
  /** Human-readable rows: [metric, value, note]. */
  rows: Array<[string, string, string]>;
  metrics: Record<string, number>;
}

type Suite = (options: SuiteOptions) => Promise<SuiteResult>;

const suites: Record<string, () => Promise<Suite>> = {
  tunnel: async () => (await import("./tunnel.js")).run,
  e2e: async () => (await import("./e2e.js")).run,
};

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { quick: { type: "boolean", default: false }, json: { type: "boolean", default: false } },
});
const name = positionals[0];
const load = name === undefined ? undefined : suites[name];
if (load === undefined) {
  console.error(`usage: npm run bench -- <${Object.keys(suites).join("|")}> [--quick] [--json]`);
  process.exit(2);
}
const result = await (await load())({ quick: values.quick });
const widths = [0, 1, 2].map((i) => Math.max(...result.rows.map((r) => r[i]!.length), 6));
console.log(`\n${name}${values.quick ? " (quick)" : ""}`);
for (const row of result.rows) {
  console.log(`  ${row[0].padEnd(widths[0]!)}  ${row[1].padStart(widths[1]!)}  ${row[2]}`);
}
if (values.json) console.log(JSON.stringify({ suite: name, quick: values.quick, ...result.metrics }));
process.exit(0);
