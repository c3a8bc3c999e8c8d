/**
 * Many watches through one client: test/tools/watchbench (client-go, one
 * rest.Config) holds WATCHES watches on one namespace directly and through
 * Tether at the same time; the bench creates ConfigMaps there one by one, and
 * each event's latency is from just before its create to its arrival on a
 * watch — the same events both ways, so the two paths share any drift.
 * Also counts the TCP connections client-go dialled for them. A watch that
 * ends before its events are in is watched again from the last resourceVersion
 * it saw, as an informer does, and counted (watch_reopened_direct/_tether).
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Cluster } from "../test/kube/index.js";
import { writeKubeconfig } from "../test/kube/kubeconfig.js";
import { ensureGoTool } from "../test/tools/go-tool.js";

const NAMESPACE = "bench-watch";

interface WatchbenchOutput {
  connections: number;
  /** Watches the apiserver (or Tether) ended before their events were in, watched again from their resourceVersion. */
  reopened: number;
  /** "HTTP/2.0 200": count. */
  responses: Record<string, number>;
  received: Record<string, number[]>;
}

export interface WatchFanout {
  watches: number;
  events: number;
  /** Per path: every (watch, event) latency in ms, sorted. */
  latencies: { direct: number[]; tether: number[] };
  connections: { direct: number; tether: number };
  reopened: { direct: number; tether: number };
  /** Protocol and status of each path's responses ("HTTP/2.0 200": count). */
  responses: { direct: Record<string, number>; tether: Record<string, number> };
}

function startWatchbench(binary: string, kubeconfig: string, watches: number, events: number) {
  const child = spawn(binary, [kubeconfig, NAMESPACE, String(watches), String(events)], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (c: Buffer) => {
    stderr += c.toString("utf8");
  });
  const lines = createInterface({ input: child.stdout });
  let ready: () => void = () => {};
  const isReady = new Promise<void>((resolve) => {
    ready = resolve;
  });
  const output = new Promise<WatchbenchOutput>((resolve, reject) => {
    let json: string | undefined;
    lines.on("line", (line) => {
      if (line === "ready") ready();
      else json = line;
    });
    child.once("close", (code) => {
      if (code === 0 && json) resolve(JSON.parse(json) as WatchbenchOutput);
      else reject(new Error(`watchbench exited ${code}: ${stderr.slice(-2000)}`));
    });
  });
  // A failure before "ready" must not leave the bench waiting for it.
  const started = Promise.race([isReady, output.then(() => {})]);
  return { started, output, kill: () => child.kill() };
}

/** Runs the fan-out against `member` directly and through the Tether path at `tether`. */
export async function measureWatchFanout(
  member: Cluster,
  tether: { url: string; caPem: string; token: string; cluster: string },
  dir: string,
  { watches, events }: { watches: number; events: number },
): Promise<WatchFanout> {
  const binary = await ensureGoTool("watchbench");
  await member.api("POST", "/api/v1/namespaces", { metadata: { name: NAMESPACE } }, [409]);
  const tetherKubeconfig = await writeKubeconfig(join(dir, "watch-tether.kubeconfig"), {
    name: tether.cluster,
    server: `${tether.url}/clusters/${tether.cluster}`,
    caPem: tether.caPem,
    token: tether.token,
  });
  const runs = {
    direct: startWatchbench(binary, member.kubeconfig, watches, events),
    tether: startWatchbench(binary, tetherKubeconfig, watches, events),
  };
  try {
    await Promise.all([runs.direct.started, runs.tether.started]);
    const createdAt = new Map<string, number>();
    for (let i = 0; i < events; i++) {
      const name = `ev-${i}`;
      createdAt.set(name, performance.timeOrigin + performance.now());
      await member.api("POST", `/api/v1/namespaces/${NAMESPACE}/configmaps`, { metadata: { name } });
      // Spaced out: the latency of one event, not of a burst.
      await new Promise((r) => setTimeout(r, 50));
    }
    const [direct, through] = await Promise.all([runs.direct.output, runs.tether.output]);
    const latencies = (out: WatchbenchOutput) => {
      const all: number[] = [];
      for (const [name, times] of Object.entries(out.received)) {
        const t0 = createdAt.get(name);
        if (t0 !== undefined) for (const at of times) all.push(at - t0);
      }
      return all.sort((a, b) => a - b);
    };
    return {
      watches,
      events,
      latencies: { direct: latencies(direct), tether: latencies(through) },
      connections: { direct: direct.connections, tether: through.connections },
      reopened: { direct: direct.reopened ?? 0, tether: through.reopened ?? 0 },
      responses: { direct: direct.responses, tether: through.responses },
    };
  } finally {
    runs.direct.kill();
    runs.tether.kill();
  }
}
