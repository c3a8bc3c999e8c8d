import t from "tap";
import { fuzz } from "../fuzz/harness.js";

// Fixed seed: every run checks the same 100,000 frames, so a failure is reproducible.
// `npm run fuzz -- --count 1000000` explores further with a fresh seed each time.
t.test("100,000 random and mutated frames: no crash, bounded memory", async (t) => {
  const before = process.memoryUsage();
  const stats = await fuzz({ count: 100_000, seed: 20_260_001 });
  t.ok(stats.frames >= 100_000, `${stats.frames} frames fed`);
  t.ok(stats.sessions > 1, `${stats.sessions} sessions, replaced as they failed`);
  t.ok(stats.streamsAccepted > 0, `${stats.streamsAccepted} streams got through to the application`);
  t.ok((stats.endings.ERR_TETHER_PROTOCOL ?? 0) > 0, "malformed input was caught as protocol errors");
  const growth = stats.peakMemory - (before.heapUsed + before.external);
  t.ok(
    growth < 512 * 1024 * 1024,
    `peak memory growth ${Math.round(growth / 1024 / 1024)} MiB stays under 512 MiB`,
  );
});
