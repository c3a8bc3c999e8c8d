// Issue 17, part 1, must show: an agent whose only route to tether-server is
// a real forward proxy (tinyproxy) joins, serves kubectl (get, watch, exec,
// port-forward) and renews; a proxy with basic auth; a 407 and a 403 give
// coded one-line errors; the proxy's password is never logged.
//
// Direct egress fails: the agent is given the server as
// https://tether-behind-proxy.test:<port>, a name only the proxies resolve
// (tinyproxy.ts), so a connection that did not go through a proxy cannot
// have reached the server; the proxies' logs show each CONNECT.
import { lookup } from "node:dns/promises";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { join as joinPath } from "node:path";
import { issueToken } from "@tether/server";
import t from "tap";
import { startClusters } from "../kube/index.js";
import { ManagedProcess } from "../kube/processes.js";
import { bindTetherAdmins, prepareMember, startTether, until } from "./fixture.js";
import { AGENT_BIN, FAST_TIMING } from "./tether-processes.js";
import { startTinyproxy } from "./tinyproxy.js";

const HOST = "tether-behind-proxy.test";
const PASSWORD = "s3cret.pw-42";

const set = await startClusters(1);
t.teardown(() => set.stop());
const member = set.clusters[0]!;
// Certificates live 8 s, so the agent renews every few seconds.
const tether = await startTether({ externalUrl: `https://${HOST}`, clusterCertTtlMs: 8_000 });
t.teardown(() => tether.stop());
await bindTetherAdmins(member);
await member.createPod("default", "box");
const saDir = joinPath(tether.dir, "sa");
const env = await prepareMember(member, saDir);
const serverUrl = `https://${HOST}:${tether.server.port}`;
const target = `${HOST}:${tether.server.port}`;
const hosts = { [HOST]: "127.0.0.1" };
const open = await startTinyproxy(tether.dir, "open", { hosts });
t.teardown(() => open.stop());
const authed = await startTinyproxy(tether.dir, "auth", {
  hosts,
  basicAuth: { user: "tether", password: PASSWORD },
});
t.teardown(() => authed.stop());
// tinyproxy refuses CONNECT to any port but those listed.
const strict = await startTinyproxy(tether.dir, "strict", { hosts, extra: ["ConnectPort 443"] });
t.teardown(() => strict.stop());
const withAuth = (user: string, password: string) => `http://${user}:${password}@127.0.0.1:${authed.port}`;

async function joinToken(cluster: string): Promise<string> {
  const { token, hash } = issueToken();
  await tether.store.addToken({
    hash,
    kind: "join",
    cluster,
    expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  });
  return token;
}

let count = 0;
/** The agent bin, joining `cluster` at serverUrl with `extraEnv` (HTTPS_PROXY…) and `args`. */
async function agentProcess(
  cluster: string,
  extraEnv: NodeJS.ProcessEnv,
  args: string[] = [],
): Promise<ManagedProcess> {
  count++;
  // The proxy variables of the machine running the tests must not decide for the agent.
  const base = { ...process.env };
  for (const k of ["https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"])
    delete base[k];
  return new ManagedProcess(
    `agent-${cluster}-${count}`,
    process.execPath,
    [
      AGENT_BIN,
      "--server",
      serverUrl,
      "--service-account-dir",
      saDir,
      "--keepalive",
      String(FAST_TIMING.keepaliveSeconds),
      "--dead-peer-timeout",
      String(FAST_TIMING.deadPeerTimeoutSeconds),
      "--cluster",
      cluster,
      "--token",
      await joinToken(cluster),
      "--ca-hash",
      tether.ca.caHash,
      "--state-dir",
      joinPath(tether.dir, `state-${cluster}-${count}`),
      ...args,
    ],
    joinPath(tether.dir, `agent-${cluster}-${count}.log`),
    { ...base, ...env, ...extraEnv },
  );
}

async function exitOf(proc: ManagedProcess): Promise<string> {
  await Promise.race([proc.exited, new Promise((r) => setTimeout(r, 30_000))]);
  t.notOk(proc.running, `${proc.name} exited`);
  await proc.stop();
  return readFile(proc.logFile, "utf8");
}

/** The one line the bin prints when it stops on an error. */
function errorLine(log: string): string {
  return log.split("\n").find((l) => l.startsWith("tether-agent: ")) ?? "";
}

t.test("without the proxy the server cannot be reached", async (t) => {
  await t.rejects(lookup(HOST), "the agent's resolver does not know the server's name");
  await tether.registerCluster("direct");
  const line = errorLine(await exitOf(await agentProcess("direct", {})));
  t.match(line, /^tether-agent: ERR_TETHER_SERVER_UNREACHABLE: .*ENOTFOUND/);
  t.equal(tether.server.sessions.get("direct"), undefined);
});

t.test("through the proxy the agent joins, serves kubectl and renews", async (t) => {
  await tether.registerCluster("proxied");
  const agent = await agentProcess("proxied", {
    HTTPS_PROXY: "http://wrong.invalid:1",
    https_proxy: open.url, // lower case wins
    NO_PROXY: "localhost,.svc,10.0.0.0/8",
  });
  t.teardown(() => agent.stop());
  await until("proxied connects", () => tether.server.sessions.get("proxied") !== undefined);
  const session = tether.server.sessions.get("proxied")!.session;
  // Two join requests (the CA, the certificate) and the tunnel.
  t.equal(await open.connects(target), 3, "join and tunnel went through the proxy");
  const started = (await readFile(agent.logFile, "utf8"))
    .split("\n")
    .find((l) => l.includes('"msg":"starting"'));
  t.match(started, `"proxy":"${open.url}"`, "the agent logs the proxy it uses");

  const kubeconfig = await tether.userKubeconfig("proxied", "alice", ["admins"]);
  const k = (args: string[], input?: string) =>
    member.kubectl(args, { kubeconfig, ...(input !== undefined ? { input } : {}) });
  const ns = await k(["get", "namespaces", "-o", "name"]);
  t.equal(ns.code, 0, ns.stderr);
  t.match(ns.stdout, /namespace\/kube-system/, "get");

  const watch = member.spawnKubectl(["get", "configmaps", "-w", "--output-watch-events"], { kubeconfig });
  t.teardown(() => watch.stop());
  await member.kubectl(["create", "configmap", "before-proxy-watch"]);
  await watch.waitFor(/ADDED\s+before-proxy-watch/);
  await member.kubectl(["create", "configmap", "through-the-proxy"]);
  await watch.waitFor(/ADDED\s+through-the-proxy/);
  t.pass("watch events arrive");

  const exec = await k(["exec", "-i", "box", "--", "sh", "-c", "cat; echo; echo err >&2"], "via-proxy");
  t.equal(exec.code, 0, exec.stderr);
  t.equal(exec.stdout, "via-proxy\n", "exec");

  const http = createServer((req, res) => res.end(`hello ${req.url}`));
  await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
  t.teardown(() => new Promise<void>((r) => http.close(() => r())));
  const pf = member.spawnKubectl(
    ["port-forward", "pod/box", `:${(http.address() as { port: number }).port}`],
    {
      kubeconfig,
    },
  );
  t.teardown(() => pf.stop());
  const m = await pf.waitFor(/Forwarding from 127\.0\.0\.1:(\d+) ->/);
  t.equal(await (await fetch(`http://127.0.0.1:${m[1]}/pf`)).text(), "hello /pf", "port-forward");

  // Renewal runs on the tunnel: the certificate changes, the session and the proxy's count stay.
  await until(
    "two renewals",
    async () => ((await readFile(agent.logFile, "utf8")).match(/certificate renewed/g) ?? []).length >= 2,
    60_000,
  );
  t.equal(tether.server.sessions.get("proxied")?.session, session, "the same session throughout");
  t.equal(await open.connects(target), 3, "no new connection for renewal");
  const after = await k(["get", "--raw", "/version"]);
  t.equal(after.code, 0, "still serving after renewals");
});

t.test("a proxy with basic auth; the password is never logged", async (t) => {
  await tether.registerCluster("authed");
  const agent = await agentProcess("authed", { HTTPS_PROXY: withAuth("tether", PASSWORD) });
  t.teardown(() => agent.stop());
  await until("authed connects", () => tether.server.sessions.get("authed") !== undefined);
  t.equal(await authed.connects(target), 3);
  const kubeconfig = await tether.userKubeconfig("authed", "alice", ["admins"]);
  const r = await member.kubectl(["get", "--raw", "/version"], { kubeconfig });
  t.equal(r.code, 0, r.stderr);
  const log = await readFile(agent.logFile, "utf8");
  t.match(log, `"proxy":"http://127.0.0.1:${authed.port}"`, "logged as scheme://host:port");
  t.notMatch(log, PASSWORD);
  t.notMatch(log, Buffer.from(`tether:${PASSWORD}`).toString("base64"));

  // Given with --proxy instead, it works too and the agent warns that the command line shows it.
  await tether.registerCluster("authed-flag");
  const flagged = await agentProcess("authed-flag", {}, ["--proxy", withAuth("tether", PASSWORD)]);
  t.teardown(() => flagged.stop());
  await until("authed-flag connects", () => tether.server.sessions.get("authed-flag") !== undefined);
  const flagLog = await readFile(flagged.logFile, "utf8");
  t.match(flagLog, /password was given with --proxy/);
  t.notMatch(flagLog, PASSWORD);
});

t.test("refusals are coded one-line errors naming the proxy", async (t) => {
  await tether.registerCluster("refused");
  const noCreds = errorLine(await exitOf(await agentProcess("refused", {}, ["--proxy", authed.url])));
  t.match(noCreds, /^tether-agent: ERR_TETHER_AGENT_PROXY_AUTH: /, "407 without credentials");
  t.match(noCreds, `http://127.0.0.1:${authed.port}`);
  t.match(noCreds, /user:password@host:port/, "says what to do");

  const wrong = await exitOf(await agentProcess("refused", { HTTPS_PROXY: withAuth("tether", "nope") }));
  t.match(
    errorLine(wrong),
    /^tether-agent: ERR_TETHER_AGENT_PROXY_AUTH: .*refused the credentials/,
    "wrong password",
  );
  t.notMatch(wrong, "nope", "not even a wrong password is printed");

  const forbidden = errorLine(await exitOf(await agentProcess("refused", { HTTPS_PROXY: strict.url })));
  t.match(
    forbidden,
    /^tether-agent: ERR_TETHER_AGENT_PROXY_FORBIDDEN: /,
    "403 for a port the proxy does not allow",
  );
  t.match(forbidden, target, "names the destination");

  const unreachable = errorLine(
    await exitOf(await agentProcess("refused", { HTTPS_PROXY: "http://127.0.0.1:1" })),
  );
  t.match(unreachable, /^tether-agent: ERR_TETHER_AGENT_PROXY_UNREACHABLE: .*http:\/\/127\.0\.0\.1:1\b/);
  t.equal(tether.server.sessions.get("refused"), undefined);
});

t.test("an agent already joined logs the code on each refused tunnel dial and keeps trying", async (t) => {
  await tether.registerCluster("rejoin");
  const first = await agentProcess("rejoin", { HTTPS_PROXY: open.url });
  await until("rejoin connects", () => tether.server.sessions.get("rejoin") !== undefined);
  await first.stop();
  // The same state dir, now behind the auth proxy without credentials: no join, only the tunnel.
  const stateDir = first.logFile.replace(/agent-rejoin-(\d+)\.log$/, "state-rejoin-$1");
  count++;
  const again = new ManagedProcess(
    "agent-rejoin-again",
    process.execPath,
    [AGENT_BIN, "--server", serverUrl, "--service-account-dir", saDir, "--state-dir", stateDir],
    joinPath(tether.dir, "agent-rejoin-again.log"),
    { ...process.env, ...env, HTTPS_PROXY: authed.url },
  );
  t.teardown(() => again.stop());
  await until("two refused dials", async () => {
    const lines = (await readFile(again.logFile, "utf8")).split("\n");
    return lines.filter((l) => l.includes('"code":"ERR_TETHER_AGENT_PROXY_AUTH"')).length >= 2;
  });
  t.ok(again.running, "it keeps redialing with backoff");
});
