// `npm run demo`: Tether end to end on one machine. Two member clusters from
// the test harness (real kube-apiserver, etcd and kubectl), tether-server on
// its embedded store, and one tether-agent per member that joins through the
// real flow (cluster add -> join token -> agent). Then a few kubectl commands
// run through Tether, and the demo keeps everything up for you to try more.
// `--once` exits after the checks instead: 0 when every check passed.
//
// Launched by scripts/demo.mjs, which installs and builds first.
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs, promisify } from "node:util";
import { stringify } from "yaml";
import { bindTetherAdmins, prepareMember, until } from "../test/e2e/fixture.js";
import { AGENT_BIN, SERVER_BIN } from "../test/e2e/tether-processes.js";
import { type Cluster, freePort, startClusters } from "../test/kube/index.js";
import { ManagedProcess } from "../test/kube/processes.js";

const { values: flags } = parseArgs({
  options: { once: { type: "boolean", default: false }, help: { type: "boolean", short: "h" } },
});
if (flags.help) {
  process.stdout.write(
    "usage: npm run demo [-- --once]\n\n" +
      "Starts two member clusters, tether-server and an agent per member, runs kubectl through Tether,\n" +
      "then keeps running until Ctrl-C (with --once: exits after the checks, non-zero if any failed).\n",
  );
  process.exit(0);
}

const run = promisify(execFile);
const MEMBERS = ["m1", "m2"];
const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)}s`;
const say = (text: string) => process.stdout.write(`${text}\n`);
const failures: string[] = [];

async function check(title: string, fn: () => Promise<string | undefined>): Promise<void> {
  try {
    const detail = await fn();
    say(`  ok    ${title}${detail ? `: ${detail}` : ""}`);
  } catch (err) {
    failures.push(title);
    say(`  FAIL  ${title}: ${(err as Error).message.split("\n").slice(0, 6).join("\n        ")}`);
  }
}

/** Runs tether-server's CLI to completion; resolves to its stdout, rejects with its one-line error. */
async function tetherServer(args: string[]): Promise<string> {
  try {
    return (await run(process.execPath, [SERVER_BIN, ...args])).stdout;
  } catch (err) {
    throw new Error(((err as { stderr?: string }).stderr ?? String(err)).trim());
  }
}

const dir = await mkdtemp(join(tmpdir(), "tether-demo-"));
const stateDir = join(dir, "state");
const processes: ManagedProcess[] = [];
let clusters: Awaited<ReturnType<typeof startClusters>> | undefined;

let stopping: Promise<never> | undefined;
function shutdown(code: number): Promise<never> {
  stopping ??= (async () => {
    await Promise.allSettled(processes.map((p) => p.stop()));
    await clusters?.stop().catch(() => {});
    await rm(dir, { recursive: true, force: true });
    process.exit(code);
  })();
  return stopping;
}
// Ctrl-C reaches both tsx and this process, so the signal can arrive twice.
process.on("SIGINT", () => void shutdown(failures.length > 0 ? 1 : 0));
process.on("SIGTERM", () => void shutdown(failures.length > 0 ? 1 : 0));

try {
  say("Tether demo: two member clusters, tether-server, one agent per member.\n");
  clusters = await startClusters(MEMBERS.length, { names: MEMBERS });
  say(`  ok    member clusters ${MEMBERS.join(", ")} started (real kube-apiserver + etcd) at ${elapsed()}`);

  const port = await freePort();
  const server = new ManagedProcess(
    "tether-server",
    process.execPath,
    // No load balancer in front to wait for: the stop at the end drains at once.
    [SERVER_BIN, "serve", "--state-dir", stateDir, "--listen", `127.0.0.1:${port}`, "--shutdown-delay", "0"],
    join(dir, "tether-server.log"),
  );
  processes.push(server);
  const url = `https://127.0.0.1:${port}`;
  await until(
    "tether-server recorded its URL",
    async () => {
      server.assertRunning();
      return (await readFile(join(stateDir, "server.json"), "utf8").catch(() => "")).includes(url);
    },
    30_000,
  );
  say(`  ok    tether-server serving ${url} (state in ${stateDir})`);

  const contexts: { name: string; token: string }[] = [];
  for (const member of clusters.clusters) {
    const joined = JSON.parse(
      await tetherServer([
        "cluster",
        "add",
        member.name,
        "--state-dir",
        stateDir,
        "--label",
        "env=demo",
        "-o",
        "json",
      ]),
    ) as { token: string; caHash: string };
    await startAgent(member, url, joined.token, joined.caHash);
    await bindTetherAdmins(member);
    const config = await tetherServer([
      "kubeconfig",
      member.name,
      "--state-dir",
      stateDir,
      "--user",
      "demo",
      "--group",
      "admins",
      "-o",
      "json",
    ]);
    const users = (JSON.parse(config) as { users: { user: { token: string } }[] }).users;
    contexts.push({ name: member.name, token: users[0]!.user.token });
  }

  const caPem = await readFile(join(stateDir, "ca.crt"), "utf8");
  const kubeconfig = join(dir, "kubeconfig");
  await writeFile(
    kubeconfig,
    stringify({
      apiVersion: "v1",
      kind: "Config",
      clusters: contexts.map((c) => ({
        name: c.name,
        cluster: {
          server: `${url}/clusters/${c.name}`,
          "certificate-authority-data": Buffer.from(caPem).toString("base64"),
        },
      })),
      users: contexts.map((c) => ({ name: `demo@${c.name}`, user: { token: c.token } })),
      contexts: contexts.map((c) => ({ name: c.name, context: { cluster: c.name, user: `demo@${c.name}` } })),
      "current-context": contexts[0]!.name,
    }),
    { mode: 0o600 },
  );
  say(`  ok    kubeconfig with contexts ${MEMBERS.join(", ")} written to ${kubeconfig}\n`);

  say("Through Tether:");
  for (const member of clusters.clusters) {
    const kubectl = (args: string[]) => member.kubectl(["--context", member.name, ...args], { kubeconfig });
    await check(`${member.name}: kubectl get namespaces`, async () => {
      const r = await kubectl(["get", "namespaces", "-o", "name"]);
      if (r.code !== 0) throw new Error(r.stderr.trim());
      return r.stdout.trim().split("\n").join(" ");
    });
    await check(`${member.name}: kubectl get configmaps --watch sees a new ConfigMap`, async () => {
      const watch = member.spawnKubectl(
        ["--context", member.name, "get", "configmaps", "-n", "default", "--watch", "-o", "name"],
        { kubeconfig },
      );
      try {
        const name = `demo-${Date.now().toString(36)}`;
        const created = await kubectl([
          "create",
          "configmap",
          name,
          "-n",
          "default",
          "--from-literal=hello=world",
        ]);
        if (created.code !== 0) throw new Error(created.stderr.trim());
        await watch.waitFor(new RegExp(`configmap/${name}`), 15_000);
        return `configmap/${name}`;
      } finally {
        await watch.stop();
      }
    });
    await check(`${member.name}: kubectl exec`, async () => {
      await member.createPod("default", "demo");
      const r = await kubectl(["exec", "demo", "--", "sh", "-c", `echo hello from $0`, member.name]);
      if (r.code !== 0 || !r.stdout.includes(`hello from ${member.name}`)) {
        throw new Error(`exit ${r.code}: ${r.stdout.trim()} ${r.stderr.trim()}`);
      }
      return JSON.stringify(r.stdout.trim());
    });
  }

  if (failures.length > 0) {
    say(`\n${failures.length} check(s) failed. Logs: ${dir}/*.log`);
    if (flags.once) await shutdown(1);
  } else {
    say(`\nAll checks passed in ${elapsed()}.`);
    if (flags.once) await shutdown(0);
  }
  const tetherCli = `${process.execPath} ${SERVER_BIN}`;
  say(`
Try next (in another terminal):
  export KUBECONFIG=${kubeconfig}
  alias kubectl=${clusters.binaries.kubectl}   # the harness's kubectl, if you have none
  kubectl --context m2 get pods -A
  kubectl --context m1 exec -it demo -- sh
  kubectl --context m1 auth whoami          # tether:demo, as the member sees you
  ${tetherCli} cluster list --state-dir ${stateDir}
  ${tetherCli} cluster remove m2 --state-dir ${stateDir}   # m2's agent is cut off at once

Logs: ${dir}/*.log. Press Ctrl-C to stop and clean up.`);
  await new Promise(() => {});
} catch (err) {
  say(`\ndemo failed: ${(err as Error).message}`);
  say(`logs: ${dir}/*.log`);
  await shutdown(1);
}

async function startAgent(member: Cluster, url: string, token: string, caHash: string): Promise<void> {
  const saDir = join(dir, `serviceaccount-${member.name}`);
  await mkdir(saDir, { recursive: true });
  const env = await prepareMember(member, saDir);
  const agent = new ManagedProcess(
    `tether-agent ${member.name}`,
    process.execPath,
    [
      AGENT_BIN,
      "--server",
      url,
      "--cluster",
      member.name,
      "--token",
      token,
      "--ca-hash",
      caHash,
      "--state-dir",
      join(dir, `agent-${member.name}`),
      "--service-account-dir",
      saDir,
    ],
    join(dir, `tether-agent-${member.name}.log`),
    { ...process.env, ...env },
  );
  processes.push(agent);
  await until(
    `agent ${member.name} joined`,
    async () => {
      agent.assertRunning();
      const log = await readFile(agent.logFile, "utf8").catch(() => "");
      return /"msg":"connected"/.test(log);
    },
    30_000,
  );
  say(`  ok    ${member.name} joined: cluster add -> one-time token -> tether-agent (mTLS from now on)`);
}
