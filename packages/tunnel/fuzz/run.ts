/**
 * `npm run fuzz -- --count 1000000 [--seed N]`: feeds frames into sessions and
 * fails (exit 1) on a crash, an unhandled rejection, or memory that does not
 * come back down after the run.
 */

import { parseArgs } from "node:util";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { fuzz } from "./harness.js";

const MEMORY_CAP = 512 * 1024 * 1024; // peak heap+external above the start, generous on purpose
const RETAINED_CAP = 64 * 1024 * 1024; // what may stay after the run and a full GC

const { values } = parseArgs({
  options: { count: { type: "string", default: "200000" }, seed: { type: "string" } },
});
const count = Number(values.count);
const seed = values.seed === undefined ? Date.now() & 0xffffffff : Number(values.seed);
if (!Number.isInteger(count) || count <= 0 || !Number.isInteger(seed)) {
  console.error("usage: npm run fuzz -- [--count N] [--seed N]");
  process.exit(2);
}

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;
const memory = () => {
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
};

let failures = 0;
process.on("unhandledRejection", (reason) => {
  failures++;
  console.error("unhandled rejection:", reason);
});
process.on("uncaughtException", (err) => {
  failures++;
  console.error("uncaught exception:", err);
});

gc();
const baseline = memory();
const started = performance.now();
const mib = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;
console.log(`fuzzing ${count} frames, seed ${seed}`);
const stats = await fuzz({
  count,
  seed,
  progressEvery: Math.max(10_000, Math.floor(count / 10)),
  onProgress: (frames, s) => {
    const rate = Math.round(frames / ((performance.now() - started) / 1000));
    console.log(
      `  ${frames} frames, ${s.sessions} sessions, ${rate} frames/s, memory ${mib(memory() - baseline)} over start`,
    );
  },
});
const seconds = (performance.now() - started) / 1000;
gc();
const retained = memory() - baseline;
const peak = stats.peakMemory - baseline;
console.log(
  `${stats.frames} frames in ${stats.messages} messages over ${stats.sessions} sessions, ` +
    `${Math.round(stats.frames / seconds)} frames/s; ${stats.streamsAccepted} streams accepted, ` +
    `${stats.bytesDelivered} bytes delivered`,
);
console.log("session endings:", stats.endings);
console.log(
  `memory: peak ${mib(peak)} over start (cap ${mib(MEMORY_CAP)}), retained after GC ${mib(retained)} (cap ${mib(RETAINED_CAP)})`,
);
if (peak > MEMORY_CAP || retained > RETAINED_CAP) {
  console.error("FAIL: memory not bounded");
  failures++;
}
if (failures > 0) {
  console.error(`FAIL: ${failures} problem(s); reproduce with --seed ${seed}`);
  process.exit(1);
}
console.log("ok: no crash, no unhandled rejection, memory bounded");
