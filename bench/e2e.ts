/**
 * `npm run bench -- e2e`: the same apiserver reached four ways in one run —
 * directly, through Tether (server and agent as separate processes, agent in
 * in-cluster mode, impersonation on) with its observability off
 * (--no-metrics), through a second Tether with it on (metrics scraped every
 * second, OBSERVED_SERVER_ARGS), and through an OpenSSH `ssh -R` reverse
 * tunnel where sshd is installed — measuring small-GET latency (p50/p99) and
 * the throughput of one large LIST. Requests are interleaved across the paths
 * round by round so that drift on a shared machine hits all of them alike.
 * Then 200 client-go watches through one client, direct and through Tether
 * at once (watch-fanout.ts): event latency and the connections they took.
 */

import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { Agent as HttpsAgent, request } from "node:https";
import { createConnection } from "node:net";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { FileStore, issueToken } from "@tether/server";
import { bindTetherAdmins, prepareMember } from "../test/e2e/fixture.js";
import { spawnAgent, spawnServer } from "../test/e2e/tether-processes.js";
import { type Cluster, freePort, startClusters } from "../test/kube/index.js";
import { ManagedProcess } from "../test/kube/processes.js";
import { ensureDebianPackage } from "../test/tools/debian-package.js";
import type { SuiteOptions, SuiteResult } from "./run.js";
import { measureWatchFanout } from "./watch-fanout.js";

interface Path {
  name: "direct" | "tether" | "tether_observed" | "ssh";
  base: string;
  agent: HttpsAgent;
  token: string;
}

const SSHD = "/usr/sbin/sshd";
/** Concurrent watches of the fan-out (watch-fanout.ts), all through one client. */
const WATCHES = 200;
/** The Tether path without observability: the baseline of observability_get_p50_ratio. The fan-out's watches are one caller's: room for all of them. */
const PLAIN_SERVER_ARGS = ["--no-metrics", "--max-streams-per-caller", String(2 * WATCHES)];
/** `serve` flags of the observed Tether path, each a feature the overhead ratio covers; files go in `dir`. */
function observedServerArgs(dir: string): string[] {
  return ["--metrics-token-file", join(dir, "metrics-token"), "--audit-log", join(dir, "audit.log")];
}
export const LIST_NAMESPACE = "bench-data";

function get(path: Path, url: string): Promise<{ bytes: number; status: number }> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${path.base}${url}`,
      { agent: path.agent, headers: { authorization: `Bearer ${path.token}`, accept: "application/json" } },
      (res) => {
        let bytes = 0;
        res.on("data", (c: Buffer) => {
          bytes += c.length;
        });
        res.on("end", () => resolve({ bytes, status: res.statusCode ?? 0 }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end();
  });
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function waitForPort(port: number, proc: ManagedProcess, limitMs = 20_000): Promise<void> {
  const end = Date.now() + limitMs;
  while (Date.now() < end) {
    proc.assertRunning();
    const open = await new Promise<boolean>((resolve) => {
      const s = createConnection({ host: "127.0.0.1", port });
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (open) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`port ${port} not open; log:\n${proc.logTail()}`);
}

/** Installs Debian's openssh-server when sshd is missing and we may (root with apt-get), as the tests install tinyproxy. */
function ensureSshd(): void {
  try {
    ensureDebianPackage({ name: "openssh-server", provides: SSHD, neededBy: "the ssh -R baseline" });
  } catch (err) {
    console.error(
      `could not install openssh-server; the ssh -R baseline is skipped: ${(err as Error).message}`,
    );
  }
}

/** sshd on loopback plus `ssh -R` from the "member" side to its apiserver; undefined without sshd. */
async function startSshTunnel(
  dir: string,
  apiPort: number,
): Promise<{ port: number; stop: () => Promise<void> } | undefined> {
  ensureSshd();
  if (!existsSync(SSHD)) return undefined;
  const ssh = join(dir, "ssh");
  await mkdir(ssh, { recursive: true, mode: 0o700 });
  for (const key of ["host_key", "client_key"]) {
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(ssh, key)]);
  }
  execFileSync("cp", [join(ssh, "client_key.pub"), join(ssh, "authorized_keys")]);
  const sshdPort = await freePort();
  const config = [
    `Port ${sshdPort}`,
    "ListenAddress 127.0.0.1",
    `HostKey ${join(ssh, "host_key")}`,
    `AuthorizedKeysFile ${join(ssh, "authorized_keys")}`,
    `PidFile ${join(ssh, "sshd.pid")}`,
    "StrictModes no",
    "UsePAM no",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "PubkeyAuthentication yes",
    "AllowTcpForwarding yes",
    "PermitRootLogin prohibit-password",
  ].join("\n");
  await writeFile(join(ssh, "sshd_config"), `${config}\n`);
  await mkdir("/run/sshd", { recursive: true }).catch(() => {});
  const sshd = new ManagedProcess(
    "sshd",
    SSHD,
    ["-D", "-e", "-f", join(ssh, "sshd_config")],
    join(ssh, "sshd.log"),
  );
  await waitForPort(sshdPort, sshd);
  const port = await freePort();
  const client = new ManagedProcess(
    "ssh -R",
    "ssh",
    [
      "-N",
      "-T",
      "-o",
      "BatchMode=yes",
      "-o",
      "StrictHostKeyChecking=no",
      "-o",
      "UserKnownHostsFile=/dev/null",
      "-o",
      "ExitOnForwardFailure=yes",
      "-i",
      join(ssh, "client_key"),
      "-p",
      String(sshdPort),
      "-R",
      `127.0.0.1:${port}:127.0.0.1:${apiPort}`,
      `${userInfo().username}@127.0.0.1`,
    ],
    join(ssh, "ssh.log"),
  );
  await waitForPort(port, client);
  return {
    port,
    stop: async () => {
      await client.stop();
      await sshd.stop();
    },
  };
}

/** `mib` ConfigMaps of 1 MiB of incompressible text each in LIST_NAMESPACE: what one large LIST reads. */
export async function fillList(member: Cluster, mib: number): Promise<void> {
  await member.api("POST", "/api/v1/namespaces", { metadata: { name: LIST_NAMESPACE } }, [409]);
  const value = randomBytes(768 * 1024).toString("base64"); // 1 MiB of incompressible text
  const names = Array.from({ length: mib }, (_, i) => `blob-${i}`);
  for (let i = 0; i < names.length; i += 4) {
    await Promise.all(
      names
        .slice(i, i + 4)
        .map((name) =>
          member.api(
            "POST",
            `/api/v1/namespaces/${LIST_NAMESPACE}/configmaps`,
            { metadata: { name }, data: { value } },
            [409],
          ),
        ),
    );
  }
}

export async function run({ quick }: SuiteOptions): Promise<SuiteResult> {
  const requests = quick ? 200 : 2000;
  const listMiB = quick ? 16 : 64;
  const listRounds = quick ? 2 : 5;
  const dir = await mkdtemp(join(tmpdir(), "tether-bench-e2e-"));
  const set = await startClusters(1, { names: ["bench"] });
  const cleanups: (() => Promise<void>)[] = [
    () => set.stop(),
    () => rm(dir, { recursive: true, force: true }),
  ];
  try {
    const member = set.clusters[0]!;
    await bindTetherAdmins(member);
    const saDir = join(dir, "sa");
    const env = await prepareMember(member, saDir);
    const plain = await startTetherPath(join(dir, "plain"), env, saDir, PLAIN_SERVER_ARGS);
    cleanups.unshift(plain.stop);
    const observedDir = join(dir, "observed");
    await mkdir(observedDir, { recursive: true });
    const scrapeToken = randomBytes(32).toString("hex");
    await writeFile(join(observedDir, "metrics-token"), scrapeToken, { mode: 0o600 });
    const observed = await startTetherPath(observedDir, env, saDir, observedServerArgs(observedDir));
    cleanups.unshift(observed.stop);
    const scraper = startScraper(observed.url, observed.caPem, scrapeToken);
    cleanups.unshift(async () => scraper.stop());

    const keepAlive = (ca: string) => new HttpsAgent({ keepAlive: true, maxSockets: 1, ca });
    const paths: Path[] = [
      { name: "direct", base: member.server, agent: keepAlive(member.caPem), token: member.admin.token },
      {
        name: "tether",
        base: `${plain.url}/clusters/bench`,
        agent: keepAlive(plain.caPem),
        token: plain.token,
      },
      {
        name: "tether_observed",
        base: `${observed.url}/clusters/bench`,
        agent: keepAlive(observed.caPem),
        token: observed.token,
      },
    ];
    for (const [p, t] of [
      [paths[1]!, plain],
      [paths[2]!, observed],
    ] as const) {
      const end = Date.now() + 30_000;
      while ((await get(p, "/api").catch(() => ({ status: 0 }))).status !== 200) {
        t.agent.assertRunning();
        if (Date.now() > end) throw new Error(`the agent did not connect; log:\n${t.agent.logTail()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const ssh = await startSshTunnel(dir, Number(new URL(member.server).port));
    if (ssh) {
      cleanups.unshift(ssh.stop);
      paths.push({
        name: "ssh",
        base: `https://127.0.0.1:${ssh.port}`,
        agent: keepAlive(member.caPem),
        token: member.admin.token,
      });
    }

    // Small GETs, one at a time, interleaved.
    const small = "/api/v1/namespaces/default";
    const samples = new Map(paths.map((p) => [p.name, [] as number[]]));
    for (let i = 0; i < requests + 50; i++) {
      for (const p of paths) {
        const t0 = process.hrtime.bigint();
        const res = await get(p, small);
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        if (res.status !== 200) throw new Error(`${p.name}: GET ${small} → ${res.status}`);
        if (i >= 50) samples.get(p.name)!.push(ms);
      }
    }

    // One large LIST.
    await fillList(member, listMiB);
    const list = `/api/v1/namespaces/${LIST_NAMESPACE}/configmaps`;
    const rates = new Map(paths.map((p) => [p.name, [] as number[]]));
    let listBytes = 0;
    for (let round = 0; round < listRounds + 1; round++) {
      for (const p of paths) {
        const t0 = process.hrtime.bigint();
        const res = await get(p, list);
        const s = Number(process.hrtime.bigint() - t0) / 1e9;
        if (res.status !== 200) throw new Error(`${p.name}: LIST → ${res.status}`);
        listBytes = res.bytes;
        if (round > 0) rates.get(p.name)!.push(res.bytes / s / 1e6);
      }
    }

    // Many watches through one client connection, the same events direct and through Tether.
    const fanout = await measureWatchFanout(
      member,
      { url: plain.url, caPem: plain.caPem, token: plain.token, cluster: "bench" },
      dir,
      { watches: WATCHES, events: quick ? 10 : 30 },
    );

    scraper.stop();
    if (scraper.failures > 0 || scraper.scrapes === 0) {
      throw new Error(`the scraper of /metrics: ${scraper.scrapes} scrapes, ${scraper.failures} failed`);
    }
    const metrics: Record<string, number> = {
      requests,
      list_bytes: listBytes,
      observability_scrapes: scraper.scrapes,
    };
    const rows: SuiteResult["rows"] = [];
    for (const p of paths) {
      const sorted = samples.get(p.name)!.sort((a, b) => a - b);
      metrics[`get_p50_ms_${p.name}`] = round3(percentile(sorted, 50));
      metrics[`get_p99_ms_${p.name}`] = round3(percentile(sorted, 99));
      metrics[`list_mbps_${p.name}`] = round3(median(rates.get(p.name)!));
      rows.push([
        `GET p50 / p99 (${p.name})`,
        `${metrics[`get_p50_ms_${p.name}`]} / ${metrics[`get_p99_ms_${p.name}`]} ms`,
        "",
      ]);
      rows.push([
        `LIST ${(listBytes / 2 ** 20).toFixed(1)} MiB (${p.name})`,
        `${metrics[`list_mbps_${p.name}`]} MB/s`,
        "",
      ]);
    }
    metrics.observability_get_p50_ratio = round3(
      metrics.get_p50_ms_tether_observed! / metrics.get_p50_ms_tether!,
    );
    metrics.observability_get_p99_ratio = round3(
      metrics.get_p99_ms_tether_observed! / metrics.get_p99_ms_tether!,
    );
    rows.push([
      "observed ÷ plain tether: GET p50, p99",
      `${metrics.observability_get_p50_ratio}, ${metrics.observability_get_p99_ratio}`,
      `target p50 ≤ 1.05; ${observedServerArgs("DIR").join(" ")}, /metrics scraped every second (${scraper.scrapes} scrapes)`,
    ]);
    for (const base of paths.filter((p) => p.name !== "tether" && p.name !== "tether_observed")) {
      const b = base.name;
      metrics[`get_p50_ratio_vs_${b}`] = round3(metrics.get_p50_ms_tether! / metrics[`get_p50_ms_${b}`]!);
      metrics[`get_p99_ratio_vs_${b}`] = round3(metrics.get_p99_ms_tether! / metrics[`get_p99_ms_${b}`]!);
      metrics[`list_throughput_ratio_vs_${b}`] = round3(
        metrics.list_mbps_tether! / metrics[`list_mbps_${b}`]!,
      );
      rows.push([
        `tether ÷ ${b}: GET p50, p99`,
        `${metrics[`get_p50_ratio_vs_${b}`]}, ${metrics[`get_p99_ratio_vs_${b}`]}`,
        "lower is better",
      ]);
      rows.push([
        `tether ÷ ${b}: LIST throughput`,
        `${metrics[`list_throughput_ratio_vs_${b}`]}`,
        "higher is better",
      ]);
    }
    for (const name of ["direct", "tether"] as const) {
      const sorted = fanout.latencies[name];
      metrics[`watch_event_p50_ms_${name}`] = round3(percentile(sorted, 50));
      metrics[`watch_event_p99_ms_${name}`] = round3(percentile(sorted, 99));
      metrics[`watch_connections_${name}`] = fanout.connections[name];
      metrics[`watch_reopened_${name}`] = fanout.reopened[name];
      rows.push([
        `${WATCHES} watches, event p50 / p99 (${name})`,
        `${metrics[`watch_event_p50_ms_${name}`]} / ${metrics[`watch_event_p99_ms_${name}`]} ms`,
        `${sorted.length} deliveries, ${fanout.connections[name]} connections, ${fanout.reopened[name]} watches reopened, ${JSON.stringify(fanout.responses[name])}`,
      ]);
    }
    metrics.watches = WATCHES;
    metrics.watch_event_p99_ratio_vs_direct = round3(
      metrics.watch_event_p99_ms_tether! / metrics.watch_event_p99_ms_direct!,
    );
    rows.push([
      "tether ÷ direct: watch event p99",
      `${metrics.watch_event_p99_ratio_vs_direct}`,
      `target ≤ 1.5; watch_connections_tether ${metrics.watch_connections_tether} (1 with h2)`,
    ]);
    if (!ssh) rows.push(["ssh -R", "skipped", `no ${SSHD} (apt-get install openssh-server)`]);
    for (const p of paths) p.agent.destroy();
    return { rows, metrics };
  } finally {
    for (const c of cleanups) await c().catch(() => {});
  }
}

export interface TetherPath {
  url: string;
  serverPid: number;
  caPem: string;
  token: string;
  agent: ManagedProcess;
  stop: () => Promise<void>;
}

/** A tether-server with `serverArgs` and its agent (both processes) in front of `member`, with its own state in `dir`. */
export async function startTetherPath(
  dir: string,
  env: NodeJS.ProcessEnv,
  saDir: string,
  serverArgs: string[],
): Promise<TetherPath> {
  await mkdir(dir, { recursive: true });
  const stateDir = join(dir, "state");
  const store = await FileStore.open(stateDir);
  await store.putCluster({
    name: "bench",
    auth: "impersonate",
    labels: {},
    allowedUsers: [],
    allowedGroups: [],
    createdAt: new Date().toISOString(),
  });
  const ca = await store.loadOrCreateCa();
  const cert = await ca.issueClusterCertificate("bench");
  await store.recordIssued(cert.serial, "bench", cert.notAfter.toISOString());
  const { token, hash } = issueToken();
  await store.addToken({
    hash,
    kind: "user",
    user: "bench",
    groups: ["admins"],
    clusters: ["bench"],
    expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  });
  const files = {
    caFile: join(dir, "ca.crt"),
    certFile: join(dir, "agent.crt"),
    keyFile: join(dir, "agent.key"),
  };
  await writeFile(files.caFile, ca.certPem);
  await writeFile(files.certFile, cert.certPem);
  await writeFile(files.keyFile, cert.keyPem!, { mode: 0o600 });
  const timing = { keepaliveSeconds: 10, deadPeerTimeoutSeconds: 30 };
  const server = await spawnServer(stateDir, ca.certPem, join(dir, "server.log"), timing, serverArgs);
  const agent = spawnAgent({
    server: server.url,
    ...files,
    env,
    serviceAccountDir: saDir,
    logFile: join(dir, "agent.log"),
    timing,
  });
  return {
    url: server.url,
    serverPid: server.proc.pid!,
    caPem: ca.certPem,
    token,
    agent,
    stop: async () => {
      await agent.stop();
      await server.proc.stop();
    },
  };
}

/** GETs /metrics every second, as a Prometheus scraping the server would. */
function startScraper(url: string, caPem: string, token: string) {
  const agent = new HttpsAgent({ keepAlive: true, maxSockets: 1, ca: caPem });
  const state = { scrapes: 0, failures: 0, stop: () => {} };
  const timer = setInterval(() => {
    const req = request(`${url}/metrics`, { agent, headers: { authorization: `Bearer ${token}` } }, (res) => {
      res.resume();
      res.on("end", () => {
        if (res.statusCode === 200) state.scrapes++;
        else state.failures++;
      });
    });
    req.on("error", () => state.failures++);
    req.end();
  }, 1000);
  state.stop = () => {
    clearInterval(timer);
    agent.destroy();
  };
  return state;
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
