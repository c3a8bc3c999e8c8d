// A real HTTP forward proxy for the agent's egress tests: Debian's tinyproxy
// on loopback with a config of the test's own. It runs in a mount namespace
// of its own where /etc/hosts is the test's file, so it resolves names that
// nothing else on the machine does: an agent told to reach such a name can
// only get there through the proxy. /etc/hosts itself is never touched.
import { readFile, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { freePort } from "../kube/index.js";
import { ManagedProcess } from "../kube/processes.js";
import { ensureDebianPackage, isInstalled } from "../tools/debian-package.js";
import { until } from "./fixture.js";

/** tinyproxy and unshare on PATH; installs tinyproxy with apt-get when it is missing (CI runs as root). */
export function ensureTinyproxy(): void {
  if (!isInstalled("unshare")) throw new Error("the proxy tests need unshare (util-linux)");
  ensureDebianPackage({ name: "tinyproxy", provides: "tinyproxy", neededBy: "the proxy tests" });
}

export interface ProxyOptions {
  /** Names only the proxy resolves, and their addresses. */
  hosts: Record<string, string>;
  basicAuth?: { user: string; password: string };
  /** More config lines (e.g. "ConnectPort 443"). */
  extra?: string[];
}

export interface Tinyproxy {
  /** http://127.0.0.1:<port> */
  url: string;
  port: number;
  /** tinyproxy's own log: one "CONNECT host:port" request line per tunnel. */
  log(): Promise<string>;
  /** How many CONNECTs to `target` (host:port) the log shows. */
  connects(target: string): Promise<number>;
  stop(): Promise<void>;
}

export async function startTinyproxy(dir: string, name: string, o: ProxyOptions): Promise<Tinyproxy> {
  ensureTinyproxy();
  const port = await freePort();
  const hostsFile = join(dir, `${name}.hosts`);
  const conf = join(dir, `${name}.conf`);
  const logFile = join(dir, `${name}.tinyproxy.log`);
  await writeFile(
    hostsFile,
    `127.0.0.1 localhost\n${Object.entries(o.hosts)
      .map(([host, ip]) => `${ip} ${host}`)
      .join("\n")}\n`,
  );
  await writeFile(logFile, "");
  await writeFile(
    conf,
    [
      `Port ${port}`,
      "Listen 127.0.0.1",
      "Timeout 600",
      `LogFile "${logFile}"`,
      "LogLevel Info",
      "MaxClients 100",
      "Allow 127.0.0.1",
      "DisableViaHeader Yes",
      ...(o.basicAuth ? [`BasicAuth ${o.basicAuth.user} ${o.basicAuth.password}`] : []),
      ...(o.extra ?? []),
      "",
    ].join("\n"),
  );
  // unshare makes the namespace's mounts private: the bind mount is seen by tinyproxy alone.
  const proc = new ManagedProcess(
    `tinyproxy-${name}`,
    "unshare",
    ["--mount", "sh", "-c", `mount --bind "$0" /etc/hosts && exec tinyproxy -d -c "$1"`, hostsFile, conf],
    join(dir, `${name}.tinyproxy.out`),
  );
  await until(`tinyproxy ${name} listening`, async () => {
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
  const log = () => readFile(logFile, "utf8");
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    log,
    async connects(target) {
      return (await log()).split("\n").filter((l) => l.includes(`CONNECT ${target} `)).length;
    },
    stop: () => proc.stop(),
  };
}
