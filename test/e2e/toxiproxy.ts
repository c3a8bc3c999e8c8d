// Toxiproxy (built with the harness) in front of a TCP address, for tests
// that break the network between agent and server: a `timeout` toxic with
// timeout 0 holds every byte forever without closing anything, which is what
// a NAT or load balancer that dropped its mapping looks like to both ends.
import { join } from "node:path";
import { ensureBinaries, freePort } from "../kube/index.js";
import { ManagedProcess } from "../kube/processes.js";
import { until } from "./fixture.js";

export interface Toxiproxy {
  /** Proxies 127.0.0.1:<port> to `upstream` (host:port); returns the port. */
  proxy(name: string, upstream: string): Promise<number>;
  /** Drops everything both ways on the proxy's connections, old and new, until heal(). */
  blackhole(name: string): Promise<void>;
  heal(name: string): Promise<void>;
  stop(): Promise<void>;
}

export async function startToxiproxy(dir: string): Promise<Toxiproxy> {
  const bins = await ensureBinaries();
  const port = await freePort();
  const api = `http://127.0.0.1:${port}`;
  const proc = new ManagedProcess(
    "toxiproxy",
    bins.toxiproxy,
    ["-host", "127.0.0.1", "-port", String(port)],
    join(dir, "toxiproxy.log"),
  );
  const call = async (method: string, path: string, body?: object) => {
    const res = await fetch(`${api}${path}`, {
      method,
      headers: { "content-type": "application/json" },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    if (!res.ok) throw new Error(`toxiproxy ${method} ${path}: ${res.status} ${await res.text()}`);
  };
  await until("toxiproxy ready", async () => {
    proc.assertRunning();
    return fetch(`${api}/version`).then(
      (r) => r.ok,
      () => false,
    );
  });
  const streams = ["upstream", "downstream"] as const;
  return {
    async proxy(name, upstream) {
      const listen = await freePort();
      await call("POST", "/proxies", { name, listen: `127.0.0.1:${listen}`, upstream, enabled: true });
      return listen;
    },
    async blackhole(name) {
      for (const stream of streams) {
        await call("POST", `/proxies/${name}/toxics`, {
          name: `blackhole-${stream}`,
          type: "timeout",
          stream,
          toxicity: 1,
          attributes: { timeout: 0 },
        });
      }
    },
    async heal(name) {
      for (const stream of streams) await call("DELETE", `/proxies/${name}/toxics/blackhole-${stream}`);
    },
    stop: () => proc.stop(),
  };
}
