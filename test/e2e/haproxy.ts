// A real TCP load balancer in front of several tether-server replicas, as a
// Kubernetes Service would be: Debian's HAProxy in TCP mode, round robin,
// backends health-checked on /readyz as a Service's readiness probe would
// (a dead or draining one leaves the rotation after three checks) and
// redispatch of a connection whose backend refuses it.
import { writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { freePort } from "../kube/index.js";
import { ManagedProcess } from "../kube/processes.js";
import { ensureDebianPackage } from "../tools/debian-package.js";
import { until } from "./fixture.js";

/** haproxy on PATH; installs it when it is missing (CI runs as root). */
export function ensureHaproxy(): void {
  ensureDebianPackage({ name: "haproxy", provides: "haproxy", neededBy: "the replica tests" });
}

export interface Haproxy {
  port: number;
  stop(): Promise<void>;
}

/** HAProxy on 127.0.0.1:<port> balancing TCP connections over `backends` (ports on 127.0.0.1). */
export async function startHaproxy(dir: string, backends: number[]): Promise<Haproxy> {
  ensureHaproxy();
  const port = await freePort();
  const conf = join(dir, "haproxy.cfg");
  await writeFile(
    conf,
    [
      "global",
      "  maxconn 4000",
      "defaults",
      "  mode tcp",
      "  timeout connect 1s",
      "  timeout client 1h",
      "  timeout server 1h",
      "  retries 3",
      "  option redispatch",
      "frontend replicas",
      `  bind 127.0.0.1:${port}`,
      "  default_backend replicas",
      "backend replicas",
      "  balance roundrobin",
      "  option httpchk GET /readyz",
      // Three misses, as a readiness probe's failureThreshold: on a loaded machine one check can time
      // out, and a replica marked down for it leaves every connection to it nowhere to go.
      "  timeout check 1s",
      ...backends.map(
        (p, i) => `  server r${i} 127.0.0.1:${p} check check-ssl verify none inter 250ms fall 3 rise 1`,
      ),
      "",
    ].join("\n"),
  );
  const proc = new ManagedProcess("haproxy", "haproxy", ["-db", "-f", conf], join(dir, "haproxy.log"));
  await until("haproxy listening", async () => {
    proc.assertRunning();
    return new Promise<boolean>((resolve) => {
      const s = connect(port, "127.0.0.1");
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
  });
  return { port, stop: () => proc.stop() };
}
