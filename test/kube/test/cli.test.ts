// Must show (issue 2): the harness CLI's --json line, and a clean tear-down
// that leaves no process, port or temp dir behind — both on Ctrl-C and when
// the CLI itself is killed with SIGKILL.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import t from "tap";
import { parse as parseYaml } from "yaml";
import { sweepAbandoned } from "../index.js";
import { isAlive } from "../processes.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

interface Line {
  clusters: { name: string; server: string; kubeconfig: string }[];
}

function childPids(pid: number): Promise<number[]> {
  return readFile(`/proc/${pid}/task/${pid}/children`, "utf8").then(
    (s) => s.trim().split(/\s+/).filter(Boolean).map(Number),
    () => [],
  );
}

async function descendants(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const c of await childPids(pid)) out.push(c, ...(await descendants(c)));
  return out;
}

function portOpen(server: string): Promise<boolean> {
  const { hostname, port } = new URL(server);
  return new Promise((resolve) => {
    const s = createConnection({ host: hostname, port: Number(port) });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

async function until(cond: () => Promise<boolean> | boolean, limitMs = 30_000): Promise<boolean> {
  const end = Date.now() + limitMs;
  while (Date.now() < end) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return cond();
}

// The CLI's temp dirs go into a directory of this test's own, so that no
// concurrent harness run (other test files, other clones) sweeps a killed
// run's dir before this test looks for it.
const scratch = await mkdtemp(join(tmpdir(), "tether-kube-cli-test-"));
t.teardown(() => rm(scratch, { recursive: true, force: true }));

function startCli(clusters: number) {
  const child = spawn(
    process.execPath,
    ["--import=tsx", join(root, "test/kube/cli.ts"), "up", "--clusters", String(clusters), "--json"],
    {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, TMPDIR: scratch },
    },
  );
  let out = "";
  let err = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
  const line = new Promise<string>((resolve, reject) => {
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      out += d;
      if (out.includes("\n")) resolve(out);
    });
    child.once("exit", (code) => reject(new Error(`cli exited ${code}: ${err}`)));
  });
  return { child, line, stderr: () => err };
}

for (const how of ["SIGINT", "SIGKILL"] as const) {
  t.test(`up --json, then ${how}`, async (t) => {
    const cli = startCli(2);
    t.teardown(() => void cli.child.kill("SIGKILL"));
    const out = await cli.line;
    t.equal(out.split("\n").filter(Boolean).length, 1, "exactly one line on stdout");
    const parsed = JSON.parse(out) as Line;
    t.equal(parsed.clusters.length, 2);
    for (const c of parsed.clusters) {
      t.match(c, {
        name: /^member\d$/,
        server: /^https:\/\/127\.0\.0\.1:\d+$/,
        kubeconfig: /^\/.*kubeconfig$/,
      });
      const kc = parseYaml(await readFile(c.kubeconfig, "utf8")) as {
        clusters: { cluster: { server: string } }[];
      };
      t.equal(kc.clusters[0]!.cluster.server, c.server, "the kubeconfig points at the cluster");
      t.ok(await portOpen(c.server), `${c.name} is listening`);
    }
    const pids = await descendants(cli.child.pid!);
    t.ok(
      pids.length >= 9,
      `etcd and, per cluster, an apiserver, a controller manager, a scheduler and a stand-in run (${pids.length} processes)`,
    );
    const dir = dirname(dirname(parsed.clusters[0]!.kubeconfig));

    cli.child.kill(how);
    await new Promise((r) => cli.child.once("exit", r));
    t.ok(await until(() => pids.every((p) => !isAlive(p))), "no harness process is left");
    for (const c of parsed.clusters) t.notOk(await portOpen(c.server), `${c.name}'s port is closed`);
    if (how === "SIGINT") t.notOk(existsSync(dir), "the temp dir is removed");
    else {
      t.ok(existsSync(dir), "a killed run cannot remove its temp dir itself");
      t.equal(dirname(dir), scratch);
      await sweepAbandoned(scratch);
      t.notOk(existsSync(dir), "the next start sweeps it");
    }
  });
}
