/**
 * `tsx bench/heap-snapshot-summary.ts <file.heapsnapshot> [per]`: the heap
 * of a snapshot (the scale bench writes one per level with
 * TETHER_BENCH_HEAP_SNAPSHOT_DIR) by constructor, the largest self sizes
 * first; with `per` (e.g. the sessions), each also divided by it. Self sizes
 * only: what an object holds through its edges is counted under those
 * objects' own names.
 */
import { readFileSync } from "node:fs";

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

const [file, perText] = process.argv.slice(2);
if (!file) {
  console.error("usage: tsx bench/heap-snapshot-summary.ts <file.heapsnapshot> [per]");
  process.exit(2);
}
const per = Number(perText ?? 1);
const snap = JSON.parse(readFileSync(file, "utf8")) as Snapshot;
const fields = snap.snapshot.meta.node_fields;
const types = snap.snapshot.meta.node_types[0];
const width = fields.length;
const [typeAt, nameAt, sizeAt] = ["type", "name", "self_size"].map((f) => fields.indexOf(f));
const totals = new Map<string, { count: number; bytes: number }>();
let all = 0;
for (let i = 0; i < snap.nodes.length; i += width) {
  const type = types[snap.nodes[i + typeAt!]!]!;
  const name = snap.strings[snap.nodes[i + nameAt!]!]!;
  const bytes = snap.nodes[i + sizeAt!]!;
  all += bytes;
  // Strings and code by their type: their names are their contents.
  const key = type === "object" || type === "closure" || type === "native" ? `${type} ${name}` : type;
  const t = totals.get(key) ?? { count: 0, bytes: 0 };
  t.count++;
  t.bytes += bytes;
  totals.set(key, t);
}
console.log(`${(all / 2 ** 20).toFixed(1)} MiB in ${snap.nodes.length / width} nodes${per > 1 ? `; per ${per}:` : ""}`);
for (const [key, t] of [...totals].sort((a, b) => b[1].bytes - a[1].bytes).slice(0, 40)) {
  const share = per > 1 ? `  ${(t.bytes / per).toFixed(0).padStart(7)} B  ${(t.count / per).toFixed(1).padStart(6)} each` : "";
  console.log(`${(t.bytes / 2 ** 20).toFixed(2).padStart(8)} MiB ${String(t.count).padStart(9)}${share}  ${key.slice(0, 90)}`);
}
