// Issue 5, must show: a full join against a harness cluster by the real
// agent bin; a replayed token refused; a wrong CA hash refused before the
// token is sent; one cluster's certificate cannot serve another's name; a
// removed cluster's agent is cut off and stays out; a short certificate
// lifetime survives several renewals on one session; a kubeconfig token
// stops working after its --ttl.
import { execFile } from "node:child_process";
import { readFile, rm, stat, writeFile } from "node:fs/promises";
import { join as joinPath } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { promisify } from "node:util";
import { CredentialsDir, inClusterTarget, join, TetherAgent } from "@tether/agent";
import { AuditLog, hashToken, issueToken } from "@tether/server";
import t from "tap";
import { startClusters } from "../kube/index.js";
import { ManagedProcess } from "../kube/processes.js";
import { bindTetherAdmins, prepareMember, startTether, TEST_TUNNEL, until } from "./fixture.js";
import { AGENT_BIN, FAST_TIMING, SERVER_BIN } from "./tether-processes.js";

const set = await startClusters(1);
t.teardown(() => set.stop());
const member = set.clusters[0]!;
// Certificates live 8 s here, so renewals happen every few seconds.
const auditLines: Record<string, unknown>[] = [];
const audit = new AuditLog({
  write: (line) => auditLines.push(JSON.parse(line) as Record<string, unknown>),
  reopen: () => {},
  close: async () => {},
});
const tether = await startTether({ clusterCertTtlMs: 8_000, audit });
t.teardown(() => tether.stop());
await bindTetherAdmins(member);
const saDir = joinPath(tether.dir, "sa");
const env = await prepareMember(member, saDir);
const caHash = tether.ca.caHash;

async function joinToken(cluster: string, ttlMs = 3600_000): Promise<string> {
  const { token, hash } = issueToken();
  await tether.store.addToken({
    hash,
    kind: "join",
    cluster,
    expiresAt: new Date(Date.now() + ttlMs).toISOString(),
  });
  return token;
}

let agentCount = 0;
function agentProcess(args: string[]): ManagedProcess {
  agentCount++;
  return new ManagedProcess(
    `agent-${agentCount}`,
    process.execPath,
    [
      AGENT_BIN,
      "--server",
      tether.server.url,
      "--service-account-dir",
      saDir,
      "--keepalive",
      String(FAST_TIMING.keepaliveSeconds),
      "--dead-peer-timeout",
      String(FAST_TIMING.deadPeerTimeoutSeconds),
      ...args,
    ],
    joinPath(tether.dir, `agent-${agentCount}.log`),
    { ...process.env, ...env },
  );
}

async function exitOf(proc: ManagedProcess): Promise<string> {
  await Promise.race([proc.exited, new Promise((r) => setTimeout(r, 30_000))]);
  t.notOk(proc.running, `${proc.name} exited`);
  await proc.stop();
  return readFile(proc.logFile, "utf8");
}

t.test("a full join with the agent bin, then kubectl through Tether", async (t) => {
  await tether.registerCluster("alpha");
  const token = await joinToken("alpha");
  const stateDir = joinPath(tether.dir, "alpha-state");
  const agent = agentProcess([
    "--cluster",
    "alpha",
    "--token",
    token,
    "--ca-hash",
    caHash,
    "--state-dir",
    stateDir,
  ]);
  t.teardown(() => agent.stop());
  await until("alpha connects", () => tether.server.sessions.get("alpha") !== undefined);
  const kubeconfig = await tether.userKubeconfig("alpha", "alice", ["admins"]);
  const res = await member.kubectl(["get", "namespaces", "-o", "name"], { kubeconfig });
  t.equal(res.code, 0, res.stderr);
  t.match(res.stdout, /namespace\/tether-system/);
  const file = joinPath(stateDir, "agent-credentials.json");
  t.equal((await stat(file)).mode & 0o777, 0o600, "the agent's key is stored 0600");
  const log = await readFile(agent.logFile, "utf8");
  t.notMatch(log, token, "the token is never logged");
  t.notMatch(log, /PRIVATE KEY/, "nor the key");
  t.match(log, /use TETHER_JOIN_TOKEN or --token-file/, "a token in argv gets a warning");

  await t.test("the token works once", async (t) => {
    const replay = agentProcess([
      "--cluster",
      "alpha",
      "--token",
      token,
      "--ca-hash",
      caHash,
      "--state-dir",
      joinPath(tether.dir, "alpha-replay"),
    ]);
    const out = await exitOf(replay);
    t.match(out, /unknown, expired or already used/);
    t.match(out, /tether-server join-token alpha/, "and says how to get a new one");
  });

  await t.test("a restarted agent reuses its saved identity, no token needed", async (t) => {
    await agent.stop();
    await until("alpha gone", () => tether.server.sessions.get("alpha") === undefined);
    const again = agentProcess(["--state-dir", stateDir]);
    t.teardown(() => again.stop());
    await until("alpha back", () => tether.server.sessions.get("alpha") !== undefined);
    t.pass("reconnected with the saved certificate");
  });
});

t.test("a wrong CA hash is refused before the token is sent", async (t) => {
  await tether.registerCluster("beta");
  const token = await joinToken("beta");
  const wrong = `sha256:${"0".repeat(64)}`;
  const bad = agentProcess([
    "--cluster",
    "beta",
    "--token",
    token,
    "--ca-hash",
    wrong,
    "--state-dir",
    joinPath(tether.dir, "beta-x"),
  ]);
  const out = await exitOf(bad);
  t.match(out, /CA hash is sha256:[0-9a-f]{64}, not the expected sha256:0{64}/);
  t.match(out, /Nothing was sent/);
  const record = await tether.store.findToken(hashToken(token));
  t.ok(record && record.usedAt === undefined, "the token is still unused");
  const good = agentProcess([
    "--cluster",
    "beta",
    "--token",
    token,
    "--ca-hash",
    caHash,
    "--state-dir",
    joinPath(tether.dir, "beta"),
  ]);
  t.teardown(() => good.stop());
  await until("beta joins with the same token", () => tether.server.sessions.get("beta") !== undefined);
});

t.test("cluster A's certificate cannot serve cluster B", async (t) => {
  await tether.registerCluster("gamma");
  await tether.registerCluster("delta");
  const token = await joinToken("delta");
  // A token for delta cannot buy a certificate for gamma.
  const wrongName = agentProcess([
    "--cluster",
    "gamma",
    "--token",
    token,
    "--ca-hash",
    caHash,
    "--state-dir",
    joinPath(tether.dir, "g1"),
  ]);
  t.match(await exitOf(wrongName), /unknown, expired or already used/);
  // gamma's saved identity, started as delta, is refused by the agent itself.
  const gammaToken = await joinToken("gamma");
  const gammaDir = joinPath(tether.dir, "gamma");
  const gamma = agentProcess([
    "--cluster",
    "gamma",
    "--token",
    gammaToken,
    "--ca-hash",
    caHash,
    "--state-dir",
    gammaDir,
  ]);
  await until("gamma connects", () => tether.server.sessions.get("gamma") !== undefined);
  await gamma.stop();
  const asDelta = agentProcess(["--cluster", "delta", "--state-dir", gammaDir]);
  t.match(await exitOf(asDelta), /holds the identity of cluster "gamma", not "delta"/);
  // And given gamma's certificate directly, the server takes it for gamma, whatever the agent says.
  const creds = (await new CredentialsDir(gammaDir).load())!;
  const impostor = new TetherAgent({
    server: tether.server.url,
    ...creds,
    target: inClusterTarget(env, saDir),
    tunnel: TEST_TUNNEL,
  });
  impostor.start();
  t.teardown(() => impostor.stop());
  await impostor.whenConnected();
  t.ok(tether.server.sessions.get("gamma"), "the session is gamma's");
  t.equal(tether.server.sessions.get("delta"), undefined, "delta still has no agent");
  const kubeconfig = await tether.userKubeconfig("delta", "alice", ["admins"]);
  const res = await member.kubectl(["get", "--raw", "/api"], { kubeconfig });
  t.match(res.stderr, /cluster "delta" has no connected Tether agent/);
});

t.test("a removed cluster's agent is cut off and cannot come back", async (t) => {
  await tether.registerCluster("epsilon");
  const dir = joinPath(tether.dir, "epsilon");
  const agent = agentProcess([
    "--cluster",
    "epsilon",
    "--token",
    await joinToken("epsilon"),
    "--ca-hash",
    caHash,
    "--state-dir",
    dir,
  ]);
  t.teardown(() => agent.stop());
  await until("epsilon connects", () => tether.server.sessions.get("epsilon") !== undefined);
  const session = tether.server.sessions.get("epsilon")!.session;
  await tether.store.revokeCluster("epsilon");
  await tether.store.deleteCluster("epsilon");
  await until("the session is closed", () => session.closed, 10_000);
  // Registered again under the same name, the old certificate is still revoked.
  await tether.registerCluster("epsilon");
  // The session was sent go-away: the agent dials again within its reconnect spread (3 s by default).
  await until("the agent dials again and is refused", async () =>
    /revoked/.test(await readFile(agent.logFile, "utf8")),
  );
  t.equal(tether.server.sessions.get("epsilon"), undefined, "the revoked agent stays out");
  t.ok(agent.running, "the agent keeps trying (with backoff), and is refused each time");
  t.match(await readFile(agent.logFile, "utf8"), /revoked/, "it logs why");
  const epsilon = auditLines.filter(
    (l) => l.kind === "agent" && (l.cluster === "epsilon" || /"epsilon"/.test(String(l.message))),
  );
  t.match(
    epsilon.map((l) => l.stage).slice(0, 3),
    ["connected", "disconnected", "refused"],
    "the audit log has the tunnel's life",
  );
  t.match(
    epsilon.find((l) => l.stage === "refused"),
    { message: /revoked/, sourceAddress: /127\.0\.0\.1/ },
  );
});

t.test("short-lived certificates are renewed over one session", async (t) => {
  await tether.registerCluster("zeta");
  const dir = joinPath(tether.dir, "zeta");
  // In process, to count renewals; joined through the same code path as the bin.
  const creds = await join({
    server: tether.server.url,
    cluster: "zeta",
    token: await joinToken("zeta"),
    caHash,
  });
  const agent = new TetherAgent({
    server: tether.server.url,
    ...creds,
    credentialStore: new CredentialsDir(dir),
    target: inClusterTarget(env, saDir),
    tunnel: TEST_TUNNEL,
  });
  agent.start();
  t.teardown(() => agent.stop());
  await agent.whenConnected();
  const session = tether.server.sessions.get("zeta")!.session;
  const kubeconfig = await tether.userKubeconfig("zeta", "alice", ["admins"]);
  // Well past two certificate lifetimes.
  await until("three renewals", () => agent.renewals >= 3, 60_000);
  t.equal(tether.server.sessions.get("zeta")?.session, session, "still the same session");
  t.notOk(session.closed);
  const res = await member.kubectl(["get", "--raw", "/api"], { kubeconfig });
  t.equal(res.code, 0, res.stderr);
  const saved = (await new CredentialsDir(dir).load())!;
  t.equal(saved.certPem, agent.certificatePem, "each renewal is saved");
  t.not(saved.certPem, creds.certPem);
  const joined = auditLines.find((l) => l.kind === "join" && l.cluster === "zeta" && l.code === 200);
  t.match(
    joined,
    { stage: "complete", path: "/join/v1/certificate", serial: /^[0-9a-f]+$/i },
    "the join is audited",
  );
  const renewed = auditLines.filter(
    (l) => l.kind === "renewal" && l.cluster === "zeta" && l.outcome === "issued",
  );
  t.ok(renewed.length >= 3, `each renewal is audited (${renewed.length} lines)`);
  t.match(renewed[0], {
    stage: "complete",
    sourceAddress: /127\.0\.0\.1/,
    serial: /^[0-9a-f]+$/i,
    notAfter: /Z$/,
  });
  t.not(renewed[0]!.serial, joined!.serial, "with the new certificate's serial");
});

t.test("a kubeconfig token stops working after its ttl", async (t) => {
  await tether.registerCluster("eta");
  const agent = agentProcess([
    "--cluster",
    "eta",
    "--token",
    await joinToken("eta"),
    "--ca-hash",
    caHash,
    "--state-dir",
    joinPath(tether.dir, "eta"),
  ]);
  t.teardown(() => agent.stop());
  await until("eta connects", () => tether.server.sessions.get("eta") !== undefined);
  // Through the admin CLI, as an operator would. Not with spawnSync: this process hosts the server, and
  // blocking it past the agent's dead-peer timeout (FAST_TIMING) cuts the agent off on a loaded machine.
  const kubeconfig = joinPath(tether.dir, "eta.kubeconfig");
  const cli = await promisify(execFile)(
    process.execPath,
    [SERVER_BIN, "kubeconfig", "eta", "--user", "alice", "--group", "admins", "--ttl", "3s"].concat([
      "--state-dir",
      tether.store.dir,
      "--server",
      tether.server.url,
    ]),
    { encoding: "utf8" },
  );
  t.match(cli.stdout, /kind: Config/, "the CLI printed a kubeconfig");
  await writeFile(kubeconfig, cli.stdout, { mode: 0o600 });
  const before = await member.kubectl(["get", "--raw", "/api"], { kubeconfig });
  t.equal(before.code, 0, before.stderr);
  await new Promise((r) => setTimeout(r, 3_500));
  const after = await member.kubectl(["get", "--raw", "/api"], { kubeconfig });
  t.not(after.code, 0);
  // An expired token is told so, with how to get a new one (revocation's 401: token-revocation.test.ts).
  t.match(after.stderr, /token expired/);
});

t.test("the server rotates its serving certificate without dropping agents", async (t) => {
  await tether.registerCluster("theta");
  const creds = await join({
    server: tether.server.url,
    cluster: "theta",
    token: await joinToken("theta"),
    caHash,
  });
  const agent = new TetherAgent({
    server: tether.server.url,
    ...creds,
    target: inClusterTarget(env, saDir),
    tunnel: TEST_TUNNEL,
  });
  agent.start();
  t.teardown(() => agent.stop());
  await agent.whenConnected();
  const session = tether.server.sessions.get("theta")!.session;
  const servingSerial = () =>
    new Promise<string>((resolve, reject) => {
      const s = tlsConnect({ host: "127.0.0.1", port: tether.server.port, ca: tether.ca.certPem }, () => {
        resolve(s.getPeerCertificate().serialNumber);
        s.destroy();
      });
      s.on("error", reject);
    });
  const before = await servingSerial();
  t.equal(
    await tether.server.reloadServingCertificate(),
    false,
    "nothing to do while the certificate is fresh",
  );
  // Gone from the store (as if it had reached the last third of its life): the store reissues it.
  await rm(joinPath(tether.store.dir, "server.crt"));
  t.equal(await tether.server.reloadServingCertificate(), true);
  const after = await servingSerial();
  t.not(after, before, "new handshakes see the new certificate");
  t.equal(tether.server.sessions.get("theta")?.session, session, "the agent's session was not dropped");
  t.notOk(session.closed);
  const kubeconfig = await tether.userKubeconfig("theta", "alice", ["admins"]);
  const res = await member.kubectl(["get", "--raw", "/api"], { kubeconfig });
  t.equal(res.code, 0, res.stderr);
});

t.test("--token-file: the join token never appears in the agent's argv", async (t) => {
  await tether.registerCluster("iota");
  const token = await joinToken("iota");
  const tokenFile = joinPath(tether.dir, "iota-token");
  await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
  const agent = agentProcess([
    "--cluster",
    "iota",
    "--token-file",
    tokenFile,
    "--ca-hash",
    caHash,
    "--state-dir",
    joinPath(tether.dir, "iota-state"),
  ]);
  t.teardown(() => agent.stop());
  // What ps shows: the process's whole command line.
  const cmdline = (await readFile(`/proc/${agent.pid}/cmdline`, "utf8")).split("\0");
  t.ok(cmdline.includes("--token-file"), "the agent runs with --token-file");
  t.notOk(
    cmdline.some((arg) => arg.includes(token)),
    "no argument holds the token",
  );
  await until("iota joins", () => tether.server.sessions.get("iota") !== undefined);
  t.notMatch(await readFile(agent.logFile, "utf8"), /use TETHER_JOIN_TOKEN or --token-file/, "no warning");
});
