/**
 * The shaped-link scenario: a tunnel session through toxiproxy (the harness's
 * build), limited to a bandwidth each way with 25 ms of latency each way
 * (50 ms RTT). One stream carries a bulk transfer agent → server that saturates
 * the link while the server makes small request/response round trips to the
 * agent on a second stream of the same session, the way a small GET's response
 * shares the link with a large download. Reported: the round trips' p99 with and
 * without the bulk running, and the bulk's throughput while they ran (after a
 * ramp-up) over the link's rate.
 *
 * Units: toxiproxy's bandwidth toxic counts KB/s with KB = 1000 bytes, so
 * MB here is 10^6 bytes throughout (1 MB/s = rate 1000).
 */

import { type ChildProcess, spawn } from "node:child_process";
import { ensureBinaries, freePort } from "../test/kube/index.js";

interface Peer {
  call<T>(cmd: string, args?: Record<string, unknown>): Promise<T>;
}

const MB = 1_000_000;
const ONE_WAY_MS = 25;
/** Bytes each way of a small request and its response. */
const GET_SIZE = 256;
/** Round trips stop after this long even if fewer than asked were done (a badly queued link). */
const BUDGET_MS = 90_000;

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};

class Toxiproxy {
  private constructor(
    private readonly child: ChildProcess,
    private readonly api: string,
  ) {}

  static async start(): Promise<Toxiproxy> {
    const bins = await ensureBinaries((line) => process.stderr.write(`  .. ${line}\n`));
    const port = await freePort();
    const child = spawn(bins.toxiproxy, ["-host", "127.0.0.1", "-port", String(port)], {
      stdio: ["ignore", "ignore", "ignore"],
    });
    const proxy = new Toxiproxy(child, `http://127.0.0.1:${port}`);
    for (let i = 0; ; i++) {
      try {
        await fetch(`${proxy.api}/version`);
        return proxy;
      } catch (err) {
        if (i > 100) throw err;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  private async request(method: string, path: string, body?: unknown): Promise<unknown> {
    const res = await fetch(`${this.api}${path}`, {
      method,
      headers: { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`toxiproxy ${method} ${path}: ${res.status} ${await res.text()}`);
    return res.json();
  }

  /** A proxy to `upstream` shaped to `rateKBps` and ONE_WAY_MS each way; returns its port. */
  async shaped(name: string, upstream: number, rateKBps: number): Promise<number> {
    const proxy = (await this.request("POST", "/proxies", {
      name,
      listen: "127.0.0.1:0",
      upstream: `127.0.0.1:${upstream}`,
    })) as { listen: string };
    for (const stream of ["upstream", "downstream"]) {
      await this.request("POST", `/proxies/${name}/toxics`, {
        name: `latency_${stream}`,
        type: "latency",
        stream,
        attributes: { latency: ONE_WAY_MS, jitter: 0 },
      });
      await this.request("POST", `/proxies/${name}/toxics`, {
        name: `bandwidth_${stream}`,
        type: "bandwidth",
        stream,
        attributes: { rate: rateKBps },
      });
    }
    return Number(proxy.listen.split(":").pop());
  }

  stop(): void {
    this.child.kill();
  }
}

interface LinkResult {
  getP99: number;
  idleGetP99: number;
  bulkRatio: number;
  bulkMBps: number;
  samples: number;
}

async function measure(
  agent: Peer,
  server: Peer,
  port: number,
  rateMBps: number,
  count: number,
  rampMs: number,
): Promise<LinkResult> {
  await agent.call("connect", { port });
  const idle = await server.call<number[]>("serverRoundTrips", {
    count: Math.ceil(count / 4),
    size: GET_SIZE,
    budgetMs: BUDGET_MS,
  });
  await agent.call("bulkStart");
  try {
    await new Promise((r) => setTimeout(r, rampMs));
    const before = await server.call<{ bytes: number; at: number }>("bulkBytes");
    const busy = await server.call<number[]>("serverRoundTrips", {
      count,
      size: GET_SIZE,
      budgetMs: BUDGET_MS,
    });
    const after = await server.call<{ bytes: number; at: number }>("bulkBytes");
    const bulkMBps = (after.bytes - before.bytes) / MB / ((after.at - before.at) / 1000);
    return {
      getP99: quantile(busy, 0.99),
      idleGetP99: quantile(idle, 0.99),
      bulkRatio: bulkMBps / rateMBps,
      bulkMBps,
      samples: busy.length,
    };
  } finally {
    await agent.call("bulkStop");
  }
}

/** Runs both links (1 MB/s and 10 MB/s) against the tunnel server's port. */
export async function shapedLink(
  quick: boolean,
  agent: Peer,
  server: Peer,
  tunnelPort: number,
): Promise<{ metrics: Record<string, number>; rows: Array<[string, string, string]> }> {
  const toxiproxy = await Toxiproxy.start();
  try {
    const count = quick ? 200 : 400;
    const slow = await measure(
      agent,
      server,
      await toxiproxy.shaped("slow", tunnelPort, 1000),
      1,
      count,
      3000,
    );
    const fast = await measure(
      agent,
      server,
      await toxiproxy.shaped("fast", tunnelPort, 10_000),
      10,
      count,
      2000,
    );
    const metrics = {
      slow_link_get_p99_ms: slow.getP99,
      slow_link_idle_get_p99_ms: slow.idleGetP99,
      slow_link_bulk_ratio: slow.bulkRatio,
      fast_link_get_p99_ms: fast.getP99,
      fast_link_idle_get_p99_ms: fast.idleGetP99,
      fast_link_bulk_ratio: fast.bulkRatio,
    };
    const row = (key: string, value: number, note: string): [string, string, string] => [
      key,
      value.toFixed(2),
      note,
    ];
    const rows: Array<[string, string, string]> = [
      row(
        "slow_link_get_p99_ms",
        slow.getP99,
        `1 MB/s each way, 50 ms RTT, ${GET_SIZE} B round trips x${slow.samples} while a bulk stream runs (target <= 250)`,
      ),
      row("slow_link_idle_get_p99_ms", slow.idleGetP99, "the same round trips with no bulk (reference)"),
      row(
        "slow_link_bulk_ratio",
        slow.bulkRatio,
        `bulk ${slow.bulkMBps.toFixed(3)} MB/s (10^6 B) during the round trips / 1 MB/s (target >= 0.9)`,
      ),
      row(
        "fast_link_get_p99_ms",
        fast.getP99,
        `10 MB/s each way, 50 ms RTT, x${fast.samples} (target <= 150)`,
      ),
      row("fast_link_idle_get_p99_ms", fast.idleGetP99, "the same round trips with no bulk (reference)"),
      row(
        "fast_link_bulk_ratio",
        fast.bulkRatio,
        `bulk ${fast.bulkMBps.toFixed(2)} MB/s during the round trips / 10 MB/s (target >= 0.9)`,
      ),
    ];
    return { metrics, rows };
  } finally {
    toxiproxy.stop();
  }
}
