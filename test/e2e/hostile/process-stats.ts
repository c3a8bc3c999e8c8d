// What the hostile suite reports about the tether-server process: resident
// memory (VmRSS) and open descriptors, read from /proc so that they are the
// server's own and not the test's.
import { readdirSync, readFileSync } from "node:fs";

export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Samples RSS and fds every `everyMs` until stopped; keeps the peaks. */
export class PeakSampler {
  peakRss = 0;
  peakFds = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly pid: number,
    everyMs = 50,
  ) {
    this.sample();
    this.timer = setInterval(() => this.sample(), everyMs);
  }

  sample(): void {
    try {
      this.peakRss = Math.max(this.peakRss, rssMiB(this.pid));
      this.peakFds = Math.max(this.peakFds, fdCount(this.pid));
    } catch {
      // The process is gone; the test that needs it will say so.
    }
  }

  stop(): { peakRss: number; peakFds: number } {
    clearInterval(this.timer);
    this.sample();
    return { peakRss: this.peakRss, peakFds: this.peakFds };
  }
}

/**
 * Polls until RSS is within `ratio` of `baseline` (RSS is given time to settle:
 * freed buffers go back once the garbage collector runs), calling `nudge`
 * between polls (light legitimate traffic, which is what makes a quiet server
 * collect). Resolves with the last reading; `limitMs` is a liveness bound.
 */
export async function settleRss(
  pid: number,
  baseline: number,
  ratio: number,
  limitMs: number,
  nudge: () => Promise<unknown>,
): Promise<{ rss: number; fds: number; settled: boolean; waitedMs: number }> {
  const start = Date.now();
  for (;;) {
    const rss = rssMiB(pid);
    const waitedMs = Date.now() - start;
    if (rss <= baseline * ratio || waitedMs >= limitMs) {
      return { rss, fds: fdCount(pid), settled: rss <= baseline * ratio, waitedMs };
    }
    await nudge().catch(() => {});
    await new Promise((r) => setTimeout(r, 500));
  }
}
