// tether-server and tether-agent as real processes (the built bins), for
// tests that kill or freeze one of them and for benchmarks that must not
// share an event loop with the load they measure.
import { execFileSync } from "node:child_process";
import { request } from "node:https";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "../kube/index.js";
import { ManagedProcess } from "../kube/processes.js";
import { TEST_TUNNEL, until } from "./fixture.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const SERVER_BIN = join(root, "packages/server/bin/tether-server.js");
export const AGENT_BIN = join(root, "packages/agent/bin/tether-agent.js");

export interface TunnelTiming {
  keepaliveSeconds: number;
  deadPeerTimeoutSeconds: number;
}

/** The fixture's short test timing, as the bins' flags want it. */
export const FAST_TIMING: TunnelTiming = {
  keepaliveSeconds: TEST_TUNNEL.keepAliveInterval / 1000,
  deadPeerTimeoutSeconds: TEST_TUNNEL.deadPeerTimeout / 1000,
};

function get(url: string, caPem: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request(url, { ca: caPem, timeout: 2_000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("error", () => resolve(0));
    req.on("timeout", () => req.destroy());
    req.end();
  });
}

export async function spawnServer(
  stateDir: string,
  caPem: string,
  logFile: string,
  timing: TunnelTiming = FAST_TIMING,
  extraArgs: string[] = [],
  /**
   * Start node without NODE_OPTIONS. Under tap it carries a process-info
   * loader (re-added to every child's environment, so only `env -u` at exec
   * time removes it) that grows the server's RSS by some 250 MiB: measurements
   * of the server's memory want it gone.
   */
  { withoutNodeOptions = false }: { withoutNodeOptions?: boolean } = {},
): Promise<{ proc: ManagedProcess; url: string }> {
  const port = await freePort();
  const url = `https://127.0.0.1:${port}`;
  const node = withoutNodeOptions ? ["-u", "NODE_OPTIONS", process.execPath] : [];
  const proc = new ManagedProcess(
    "tether-server",
    withoutNodeOptions ? "env" : process.execPath,
    [
      ...node,
      SERVER_BIN,
      "serve",
      "--state-dir",
      stateDir,
      "--listen",
      `127.0.0.1:${port}`,
      "--keepalive",
      String(timing.keepaliveSeconds),
      "--dead-peer-timeout",
      String(timing.deadPeerTimeoutSeconds),
      // No balancer to wait for: a stop (the teardown's SIGTERM) drains at once; extraArgs may set one.
      "--shutdown-delay",
      "0",
      ...extraArgs,
    ],
    logFile,
  );
  await until("tether-server ready", async () => {
    // A server that died says why in its log.
    proc.assertRunning();
    return (await get(`${url}/readyz`, caPem)) === 200;
  });
  return { proc, url };
}

/**
 * The `serve` flags among `wanted` that this build of tether-server knows
 * (from its --help), as argv, and the names of those it does not: a suite
 * written against flags another branch adds still runs here and says which
 * limits it could not set.
 */
export function knownServeFlags(wanted: [flag: string, value: string][]): {
  args: string[];
  unknown: string[];
} {
  const help = execFileSync(process.execPath, [SERVER_BIN, "serve", "--help"], { encoding: "utf8" });
  const args: string[] = [];
  const unknown: string[] = [];
  for (const [flag, value] of wanted) {
    if (new RegExp(`(^|\\s)${flag}[\\s=<,]`).test(help)) args.push(flag, value);
    else unknown.push(flag);
  }
  return { args, unknown };
}

export interface AgentProcessOptions {
  server: string;
  caFile: string;
  certFile: string;
  keyFile: string;
  /** In-cluster mode: KUBERNETES_SERVICE_HOST/PORT and the service-account dir. */
  env: NodeJS.ProcessEnv;
  serviceAccountDir: string;
  logFile: string;
  timing?: TunnelTiming;
}

export function spawnAgent(o: AgentProcessOptions): ManagedProcess {
  const timing = o.timing ?? FAST_TIMING;
  const env = { ...process.env, ...o.env };
  return new ManagedProcess(
    "tether-agent",
    process.execPath,
    [
      AGENT_BIN,
      "--server",
      o.server,
      "--ca-file",
      o.caFile,
      "--cert-file",
      o.certFile,
      "--key-file",
      o.keyFile,
      "--service-account-dir",
      o.serviceAccountDir,
      "--keepalive",
      String(timing.keepaliveSeconds),
      "--dead-peer-timeout",
      String(timing.deadPeerTimeoutSeconds),
    ],
    o.logFile,
    env,
  );
}

/** Sends a signal to a managed process (SIGSTOP freezes it: a silent network death). */
export function signal(proc: ManagedProcess, sig: NodeJS.Signals): void {
  if (proc.pid) process.kill(proc.pid, sig);
}
