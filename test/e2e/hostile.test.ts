// Issue 10, must show: after each hostile test the server still serves a
// legitimate caller of the same cluster, and its RSS returns within 20% of
// the baseline once the hostile party is gone. tether-server runs as its own
// process (the built bin, file store) so that its RSS and descriptors are its
// own; real agents sit in front of a real harness member. Each attack of the
// issue is made with raw sockets, a hostile agent built on Tether's session
// code, or a recording fake member, and checked against the behaviour the
// issue asks for. The suite's comments are the report: per attack, RSS
// baseline/peak/after and server descriptors.
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type AgentOptions,
  type Credentials,
  inClusterTarget,
  join as joinCluster,
  type KubeTarget,
  keyAndCsr,
  kubeconfigTarget,
  TetherAgent,
} from "@tether/agent";
import { FileStore, issueToken, runCliCaptured } from "@tether/server";
import t, { type Test } from "tap";
import { startClusters } from "../kube/index.js";
import { bindTetherAdmins, prepareMember, TEST_TUNNEL, until } from "./fixture.js";
import { connectFakeAgent, type FakeAgent, RenewalStream } from "./hostile/fake-agent.js";
import { FakeMember } from "./hostile/fake-member.js";
import { fdCount, PeakSampler, rssMiB, settleRss } from "./hostile/process-stats.js";
import {
  exchange,
  isStatus,
  type RawConnection,
  requestHead,
  type Target,
  tcpOpen,
  tlsOpen,
  websocketUpgrade,
} from "./hostile/raw.js";
import { FAST_TIMING, knownServeFlags, spawnServer } from "./tether-processes.js";

/** Small limits so that every attack hits them quickly (the contract's flags). */
const LIMIT_FLAGS: [string, string][] = [
  ["--headers-timeout", "2s"],
  ["--idle-timeout", "4s"],
  ["--tls-handshake-timeout", "3s"],
  ["--max-connections", "200"],
  ["--max-streams-per-caller", "8"],
  ["--stream-idle-timeout", "3s"],
  ["--drain-timeout", "2s"],
  ["--auth-failure-limit", "5"],
  ["--auth-failure-window", "5s"],
];
const MAX_CONNECTIONS = 200;
const PER_CALLER = 8;
/** The small cluster's agent takes this many streams at once (the session limit). */
const SMALL_SESSION = 12;
/**
 * Each attack must leave RSS within this of what the server held just before
 * it (the issue's "within 20% of its baseline"). V8 keeps some of a burst's
 * heap for reuse, so across ten attacks in a row RSS drifts up a few MiB per
 * attack; the whole run is bounded by CUMULATIVE_RSS_RATIO of the warm-up.
 */
const RSS_RATIO = 1.2;
const CUMULATIVE_RSS_RATIO = 1.35;
/** Descriptors the server may hold beyond the baseline afterwards (new agent sessions, kept-alive kubectl connections). */
const FD_SLACK = 10;
/** Liveness bounds (never performance assertions). */
const CLOSE_BOUND_MS = 45_000;
const SETTLE_BOUND_MS = 40_000;

const set = await startClusters(1);
t.teardown(() => set.stop());
const member = set.clusters[0]!;
const dir = await mkdtemp(join(tmpdir(), "tether-hostile-"));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const stateDir = join(dir, "state");

// The CA and serving certificate first, so the fake member can use a certificate the agents trust.
const store = await FileStore.open(stateDir);
const ca = await store.loadOrCreateCa();
const serving = await store.loadOrCreateServingCertificate({
  dnsNames: ["localhost"],
  ips: ["127.0.0.1", "::1"],
});

const flags = knownServeFlags(LIMIT_FLAGS);
t.comment(`tether-server serve ${flags.args.join(" ")}`);
if (flags.unknown.length > 0)
  t.comment(`this build has no ${flags.unknown.join(", ")}: those limits stay unset`);
const serverLog = join(dir, "server.log");
// Without the test runner's NODE_OPTIONS: tap's process-info loader alone
// would add some 250 MiB to the server's RSS and hide what the attacks do.
const spawned = await spawnServer(stateDir, ca.certPem, serverLog, FAST_TIMING, flags.args, {
  withoutNodeOptions: true,
});
const server = spawned.proc;
t.teardown(() => server.stop());
const url = spawned.url;
const pid = server.pid!;
const rssAtStart = rssMiB(pid);
const port = Number(new URL(url).port);
const legitTarget: Target = { port, ca: ca.certPem };
/** The hostile party connects from another loopback address, so per-source limits tell it apart. */
const hostileTarget: Target = { port, ca: ca.certPem, localAddress: "127.0.0.2" };

async function admin(args: string[]): Promise<string> {
  const r = await runCliCaptured([...args, "--state-dir", stateDir]);
  if (r.code !== 0) throw new Error(`tether-server ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** Registers a cluster and joins it the way an agent does: credentials from a one-time token. */
async function addAndJoin(name: string, extra: string[] = []): Promise<Credentials> {
  const info = JSON.parse(await admin(["cluster", "add", name, "--server", url, "-o", "json", ...extra])) as {
    token: string;
    caHash: string;
  };
  return joinCluster({ server: url, cluster: name, token: info.token, caHash: info.caHash });
}

interface User {
  kubeconfig: string;
  token: string;
}

async function user(cluster: string, name: string, groups: string[] = []): Promise<User> {
  const text = await admin([
    "kubeconfig",
    cluster,
    "--user",
    name,
    ...groups.flatMap((g) => ["--group", g]),
    "--server",
    url,
    "-o",
    "json",
  ]);
  const path = join(dir, `kc-${cluster}-${name}`);
  await writeFile(path, text, { mode: 0o600 });
  const token = (JSON.parse(text) as { users: { user: { token: string } }[] }).users[0]!.user.token;
  return { kubeconfig: path, token };
}

const agents: TetherAgent[] = [];
t.teardown(() => Promise.all(agents.map((a) => a.stop())));
async function startAgent(
  creds: Credentials,
  target: KubeTarget,
  tunnel: AgentOptions["tunnel"] = TEST_TUNNEL,
): Promise<TetherAgent> {
  const agent = new TetherAgent({
    server: url,
    caPem: creds.caPem,
    certPem: creds.certPem,
    keyPem: creds.keyPem,
    target,
    tunnel,
    backoff: { baseMs: 100, capMs: 1_000 },
  });
  agents.push(agent);
  agent.start();
  await agent.whenConnected();
  return agent;
}

// The member: Tether's admins are cluster-admin; mallory and mallory2 may watch
// configmaps and exec in namespace "hostile" only — enough to hold streams.
await bindTetherAdmins(member);
await member.api("POST", "/api/v1/namespaces", { metadata: { name: "hostile" } }, [409]);
await member.api("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/hostile/roles", {
  metadata: { name: "hold-streams" },
  rules: [
    { apiGroups: [""], resources: ["configmaps"], verbs: ["get", "list", "watch"] },
    { apiGroups: [""], resources: ["pods"], verbs: ["get"] },
    { apiGroups: [""], resources: ["pods/exec"], verbs: ["get", "create"] },
  ],
});
await member.api("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/hostile/rolebindings", {
  metadata: { name: "hold-streams" },
  roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "hold-streams" },
  subjects: ["tether:mallory", "tether:mallory2"].map((name) => ({
    apiGroup: "rbac.authorization.k8s.io",
    kind: "User",
    name,
  })),
});
await member.createPod("default", "box");
await member.createPod("hostile", "box");
await member.api("POST", "/api/v1/namespaces/default/configmaps", { metadata: { name: "watch-anchor" } });

// Clusters. m1: the main one, a service-account-token agent (as in a member).
// m1cert / m1pass: the same member through an agent whose kubeconfig
// authenticates by client certificate (system:masters), impersonate and
// passthrough. m1small: an agent that takes only SMALL_SESSION streams.
// m2: allows the group "admins" (a scoped m1 token must still not reach it).
// fake, fakepass: agents (impersonate, passthrough) in front of a fake member
// that records what reaches it.
const saDir = join(dir, "sa");
const saEnv = await prepareMember(member, saDir);
const saTarget = inClusterTarget(saEnv, saDir);
const certTarget = kubeconfigTarget(member.kubeconfig);
const fakeMember = new FakeMember({ certPem: serving.certPem, keyPem: serving.keyPem, caPem: ca.certPem });
const fakeUrl = await fakeMember.listen();
t.teardown(() => fakeMember.close());
const fakeTarget: KubeTarget = {
  url: new URL(fakeUrl),
  tls: { ca: ca.certPem },
  authorization: () => "Bearer fake-member-service-account-token",
  description: "fake member",
};

const creds = {
  m1: await addAndJoin("m1"),
  m1cert: await addAndJoin("m1cert"),
  m1pass: await addAndJoin("m1pass", ["--auth", "passthrough"]),
  m1small: await addAndJoin("m1small"),
  m2: await addAndJoin("m2", ["--allow-group", "admins"]),
  fake: await addAndJoin("fake"),
  fakepass: await addAndJoin("fakepass", ["--auth", "passthrough"]),
};
let m1Agent = await startAgent(creds.m1, saTarget);
await startAgent(creds.m1cert, certTarget);
await startAgent(creds.m1pass, certTarget);
await startAgent(creds.m1small, saTarget, { ...TEST_TUNNEL, maxStreams: SMALL_SESSION });
await startAgent(creds.m2, saTarget);
await startAgent(creds.fake, fakeTarget);
// A passthrough agent whose own credential is a client certificate and a token: neither may go along.
await startAgent(creds.fakepass, {
  ...fakeTarget,
  tls: { ca: ca.certPem, cert: member.admin.certPem, key: member.admin.keyPem },
  authorization: () => "Bearer agent-own-token",
});

const alice = {
  m1: await user("m1", "alice", ["admins"]),
  m1cert: await user("m1cert", "alice", ["admins"]),
  m1small: await user("m1small", "alice", ["admins"]),
  fake: await user("fake", "alice", ["admins"]),
};
const mallory = {
  m1: await user("m1", "mallory"),
  m1cert: await user("m1cert", "mallory"),
  m1small: await user("m1small", "mallory"),
};
const mallory2 = { m1small: await user("m1small", "mallory2") };
const carol = {
  m1: await user("m1", "carol", ["devs", "admins"]),
  fake: await user("fake", "carol", ["devs", "admins", "ops"]),
};
const passthroughKubeconfig = join(dir, "kc-m1pass-admin");
await writeFile(
  passthroughKubeconfig,
  JSON.stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [
      {
        name: "m1pass",
        cluster: {
          server: `${url}/clusters/m1pass`,
          "certificate-authority-data": Buffer.from(ca.certPem).toString("base64"),
        },
      },
    ],
    users: [{ name: "member-admin", user: { token: member.admin.token } }],
    contexts: [{ name: "m1pass", context: { cluster: "m1pass", user: "member-admin" } }],
    "current-context": "m1pass",
  }),
);

// ---- the legitimate caller ------------------------------------------------

let served = 0;
/**
 * kubectl get, a watch that sees an event, and an exec through `cluster`
 * ("full"); kubectl get only ("get"); or, for the fake member, which speaks
 * no Kubernetes API, kubectl get --raw /version ("raw").
 */
type Check = "full" | "get" | "raw";
async function legitimateCaller(
  t: Test,
  cluster: string,
  kubeconfig: string,
  check: Check = "full",
): Promise<void> {
  if (check === "raw") {
    const raw = await member.kubectl(["get", "--raw", "/version"], { kubeconfig });
    t.equal(raw.code, 0, `${cluster}: kubectl get --raw /version is served ${raw.stderr.trim()}`);
    return;
  }
  const get = await member.kubectl(["get", "pods", "-n", "default", "-o", "name"], { kubeconfig });
  t.equal(get.code, 0, `${cluster}: kubectl get is served ${get.stderr.trim()}`);
  if (check !== "full") return;
  const name = `legit-${++served}`;
  const watch = member.spawnKubectl(["get", "configmaps", "-n", "default", "-w", "--output-watch-events"], {
    kubeconfig,
  });
  try {
    await watch.waitFor(/ADDED\s+watch-anchor/, 20_000);
    await member.api("POST", "/api/v1/namespaces/default/configmaps", { metadata: { name } });
    await watch.waitFor(new RegExp(`ADDED\\s+${name}`), 20_000);
    t.pass(`${cluster}: a watch is served and sees an event`);
  } catch (err) {
    t.fail(`${cluster}: a watch is served and sees an event`, { err: (err as Error).message });
  } finally {
    await watch.stop();
  }
  const exec = await member.kubectl(["exec", "box", "--", "echo", `served-${served}`], { kubeconfig });
  t.equal(exec.stdout.trim(), `served-${served}`, `${cluster}: an exec is served ${exec.stderr.trim()}`);
}

const nudge = () => member.kubectl(["get", "--raw", "/version"], { kubeconfig: alice.m1.kubeconfig });

// Warm-up: legitimate traffic on every path, then the baseline.
// (Subtests are queued, not awaited, at the top level: tap ends the root test
// when it finds its queue empty.)
const baseline = { rss: 0, fds: 0 };
t.test("warm-up", async (t) => {
  t.comment(`RSS ${rssAtStart.toFixed(1)} MiB at start, ${rssMiB(pid).toFixed(1)} with the agents connected`);
  for (let i = 0; i < 3; i++) {
    await legitimateCaller(t, "m1", alice.m1.kubeconfig);
    t.comment(`RSS ${rssMiB(pid).toFixed(1)} MiB after round ${i + 1}`);
  }
  await legitimateCaller(t, "m1cert", alice.m1cert.kubeconfig, "get");
  await legitimateCaller(t, "m1pass", passthroughKubeconfig, "get");
  await legitimateCaller(t, "m1small", alice.m1small.kubeconfig, "get");
  await legitimateCaller(t, "fake", alice.fake.kubeconfig, "raw");
  await new Promise((r) => setTimeout(r, 1_000));
  baseline.rss = rssMiB(pid);
  baseline.fds = fdCount(pid);
  t.comment(`baseline after warm-up: RSS ${baseline.rss.toFixed(1)} MiB, ${baseline.fds} fds`);
});

interface Figure {
  attack: string;
  before: number;
  peak: number;
  after: number;
  settled: boolean;
  fdsPeak: number;
  fdsAfter: number;
}
const figures: Figure[] = [];

type Legit = [cluster: string, kubeconfig: string, check: Check];

/**
 * Runs `attack` (which must take the hostile party away when it ends), then
 * checks that legitimate callers of the attacked clusters are served, that
 * RSS settles back within RSS_RATIO of what it was before the attack and
 * within CUMULATIVE_RSS_RATIO of the warm-up baseline.
 */
function hostile(
  name: string,
  attack: (t: Test) => Promise<void>,
  legit: Legit[] | (() => Legit[]) = [["m1", alice.m1.kubeconfig, "full"]],
): void {
  t.test(name, async (t) => {
    const before = rssMiB(pid);
    const sampler = new PeakSampler(pid);
    try {
      await t.test("attack", attack);
    } finally {
      sampler.stop();
    }
    await t.test("afterwards", async (t) => {
      for (const [cluster, kubeconfig, check] of typeof legit === "function" ? legit() : legit)
        await legitimateCaller(t, cluster, kubeconfig, check);
      server.assertRunning();
      const after = await settleRss(pid, before, RSS_RATIO, SETTLE_BOUND_MS, nudge);
      sampler.sample();
      const f: Figure = {
        attack: name,
        before,
        peak: sampler.peakRss,
        after: after.rss,
        settled: after.settled,
        fdsPeak: sampler.peakFds,
        fdsAfter: after.fds,
      };
      figures.push(f);
      t.comment(
        `RSS MiB: baseline ${baseline.rss.toFixed(1)}, before ${f.before.toFixed(1)}, peak ${f.peak.toFixed(1)}, ` +
          `after ${f.after.toFixed(1)} (${after.waitedMs} ms to settle); fds: baseline ${baseline.fds}, ` +
          `peak ${f.fdsPeak}, after ${f.fdsAfter}`,
      );
      // Descriptors too: a connection or stream the attack left behind would show here.
      const fdsBack = await until(
        "server fds back near the baseline",
        () => fdCount(pid) <= baseline.fds + FD_SLACK,
        20_000,
      )
        .then(() => true)
        .catch(() => false);
      t.ok(
        fdsBack,
        `server fds back within ${FD_SLACK} of the baseline (${fdCount(pid)}, baseline ${baseline.fds})`,
      );
      t.ok(
        after.settled,
        `RSS back within ${Math.round((RSS_RATIO - 1) * 100)}% of its level before the attack (${f.after.toFixed(1)} ≤ ${(before * RSS_RATIO).toFixed(1)} MiB)`,
      );
      t.ok(
        f.after <= baseline.rss * CUMULATIVE_RSS_RATIO,
        `and within ${Math.round((CUMULATIVE_RSS_RATIO - 1) * 100)}% of the warm-up baseline after every attack so far (${f.after.toFixed(1)} ≤ ${(baseline.rss * CUMULATIVE_RSS_RATIO).toFixed(1)} MiB)`,
      );
    });
  });
}

const auth = (token: string): [string, string] => ["Authorization", `Bearer ${token}`];
const host: [string, string] = ["Host", "127.0.0.1"];
const smuggledPost = (name: string) => {
  const body = JSON.stringify({ apiVersion: "v1", kind: "ConfigMap", metadata: { name } });
  return (
    requestHead("POST", "/api/v1/namespaces/default/configmaps", [
      host,
      ["Content-Type", "application/json"],
      ["Content-Length", String(body.length)],
    ]) + body
  );
};
const smuggledGet = requestHead("GET", "/api/v1/namespaces/kube-system/secrets", [host]);

/** An upgrade request to a path that does not upgrade, with a second request pipelined behind it. */
async function upgradeThatDoesNotUpgrade(
  t: Test,
  cluster: string,
  token: string,
  smuggled: string,
): Promise<RawConnection> {
  const { conn, head } = await exchange(
    hostileTarget,
    requestHead("GET", `/clusters/${cluster}/version`, [
      host,
      auth(token),
      ["Connection", "Upgrade"],
      ["Upgrade", "websocket"],
    ]) + smuggled,
  );
  // Whatever else comes, comes now: the member answers a smuggled request at once.
  await conn.waitUntil((c) => c.closed, 5_000);
  t.not(head?.status, 101, `${cluster}: no 101 for a path that does not upgrade (got ${head?.status})`);
  t.equal(conn.statuses.length, 1, `${cluster}: one response only: ${conn.statuses.join(", ")}`);
  t.ok(conn.closed, `${cluster}: the connection is closed after the relayed response`);
  t.match(
    head?.headers.connection ?? "",
    /close/i,
    `${cluster}: the relayed response says Connection: close`,
  );
  conn.destroy();
  return conn;
}

async function configMapExists(name: string): Promise<boolean> {
  const r = await member.api("GET", `/api/v1/namespaces/default/configmaps/${name}`, undefined, [404]);
  return r.status === 200;
}

// ---- 1, 2: upgrades that do not upgrade; passthrough credentials ---------

hostile(
  "1/2: an upgrade that does not upgrade, and passthrough with the agent's certificate",
  async (t) => {
    await t.test("service-account agent: pipelined bytes never reach the member", async (t) => {
      await upgradeThatDoesNotUpgrade(t, "m1", mallory.m1.token, smuggledGet);
    });
    await t.test("client-certificate agent: no request runs as the agent's certificate", async (t) => {
      await upgradeThatDoesNotUpgrade(t, "m1cert", mallory.m1cert.token, smuggledPost("smuggled-cert"));
      t.notOk(await configMapExists("smuggled-cert"), "the smuggled POST created nothing on the member");
    });
    await t.test("passthrough, client-certificate agent", async (t) => {
      const { conn, head } = await exchange(
        hostileTarget,
        requestHead("GET", "/clusters/m1pass/api/v1/namespaces/kube-system/secrets", [
          host,
          auth("not-a-member-token"),
        ]),
      );
      conn.destroy();
      t.equal(
        head?.status,
        401,
        "a bogus bearer token is refused by the member, not run as the agent's certificate",
      );
      await upgradeThatDoesNotUpgrade(t, "m1pass", "not-a-member-token", smuggledPost("smuggled-pass"));
      t.notOk(await configMapExists("smuggled-pass"), "the smuggled POST created nothing on the member");
    });
    await t.test("recording member: not one smuggled byte arrives", async (t) => {
      const marker = `/smuggled-${randomBytes(4).toString("hex")}`;
      await upgradeThatDoesNotUpgrade(
        t,
        "fake",
        alice.fake.token,
        requestHead("GET", marker, [host, ["Connection", "Upgrade"], ["Upgrade", "websocket"]]),
      );
      t.match(fakeMember.all, /GET \/version HTTP\/1\.1/, "the upgrade request itself reached the member");
      t.notMatch(fakeMember.all, marker, "the pipelined request did not");
    });
    await t.test("the upgrade tokens Kubernetes uses are accepted in any case", async (t) => {
      for (const token of ["WebSocket", "WEBSOCKET"]) {
        const { conn, head } = await exchange(
          legitTarget,
          requestHead(
            "GET",
            "/clusters/m1/api/v1/namespaces/default/pods/box/exec?command=true&stdout=true",
            [
              host,
              auth(alice.m1.token),
              ...websocketUpgrade().map(([n, v]): [string, string] =>
                n === "Upgrade" ? [n, token] : [n, v],
              ),
            ],
          ),
        );
        conn.destroy();
        t.equal(head?.status, 101, `Upgrade: ${token} → ${head?.status}`);
      }
    });
    await t.test("an upgrade token Kubernetes does not use is refused with 400", async (t) => {
      for (const token of ["h2c", "TLS/1.2", "websocket-but-not"]) {
        const { conn, head } = await exchange(
          hostileTarget,
          requestHead("GET", "/clusters/m1/version", [
            host,
            auth(mallory.m1.token),
            ["Connection", "Upgrade"],
            ["Upgrade", token],
          ]),
        );
        await conn.waitUntil((c) => c.closed, 5_000);
        t.equal(head?.status, 400, `Upgrade: ${token} → ${head?.status}`);
        t.ok(isStatus(head, 400), "a Status body");
        t.ok(conn.closed, "and the connection is closed");
        conn.destroy();
      }
    });
  },
  [
    ["m1", alice.m1.kubeconfig, "full"],
    ["m1cert", alice.m1cert.kubeconfig, "full"],
    ["m1pass", passthroughKubeconfig, "get"],
  ],
);

// ---- 7, 9: what reaches the member ---------------------------------------

hostile(
  "7/9: forwarded headers, group lines, a 101 to a plain request (agent end)",
  async (t) => {
    const spoof: [string, string][] = [
      ["X-Forwarded-For", "6.6.6.6"],
      ["X-Forwarded-Host", "evil.example"],
      ["X-Forwarded-Proto", "gopher"],
      ["X-Forwarded-Port", "6666"],
      ["Forwarded", "for=6.6.6.6;host=evil.example"],
      ["X-Real-Ip", "6.6.6.6"],
    ];
    const requests: [string, string][] = [
      [
        "plain GET",
        requestHead("GET", "/clusters/fake/api/v1/pods", [host, auth(carol.fake.token), ...spoof]),
      ],
      [
        "watch",
        requestHead("GET", "/clusters/fake/api/v1/pods?watch=true", [host, auth(carol.fake.token), ...spoof]),
      ],
      [
        "exec upgrade",
        requestHead(
          "GET",
          "/clusters/fake/api/v1/namespaces/default/pods/box/exec?command=true&stdout=true",
          [host, auth(carol.fake.token), ...spoof, ...websocketUpgrade()],
        ),
      ],
      [
        "port-forward upgrade",
        requestHead("POST", "/clusters/fake/api/v1/namespaces/default/pods/box/portforward", [
          host,
          auth(carol.fake.token),
          ...spoof,
          ["Connection", "Upgrade"],
          ["Upgrade", "SPDY/3.1"],
          ["X-Stream-Protocol-Version", "portforward.k8s.io"],
        ]),
      ],
    ];
    for (const [what, request] of requests) {
      const seen = fakeMember.requests.length;
      const { conn } = await exchange(hostileTarget, request);
      conn.destroy();
      await until(`${what} reaches the fake member`, () => fakeMember.requests.length > seen, 10_000);
      const head = fakeMember.requests[seen]!.head;
      const groups = (head.match(/^impersonate-group:.*$/gim) ?? []).map((g) =>
        g.split(":").slice(1).join(":").trim(),
      );
      t.same(
        groups.sort(),
        ["tether:admins", "tether:devs", "tether:ops"],
        `${what}: one Impersonate-Group line per group`,
      );
      t.notMatch(
        head,
        /6\.6\.6\.6|evil\.example|gopher|6666|^forwarded:|^x-real-ip:/im,
        `${what}: no caller-supplied forwarding header`,
      );
      t.match(
        head,
        /^x-forwarded-for: 127\.0\.0\.2\r?$/im,
        `${what}: X-Forwarded-For is the caller's peer address`,
      );
      t.notMatch(head, carol.fake.token, `${what}: the caller's Tether token does not reach the member`);
    }

    await t.test("passthrough: the agent's client certificate and token never go along", async (t) => {
      for (const [what, request] of [
        ["plain GET", requestHead("GET", "/clusters/fakepass/api/v1/pods", [host, auth("caller-own-token")])],
        [
          "exec upgrade",
          requestHead(
            "GET",
            "/clusters/fakepass/api/v1/namespaces/default/pods/box/exec?command=true&stdout=true",
            [host, auth("caller-own-token"), ...websocketUpgrade()],
          ),
        ],
      ] as const) {
        const seen = fakeMember.requests.length;
        const { conn, head } = await exchange(hostileTarget, request);
        conn.destroy();
        const reached = await until(
          `${what} reaches the fake member`,
          () => fakeMember.requests.length > seen,
          10_000,
        )
          .then(() => true)
          .catch(() => false);
        if (!reached) {
          // Refusing passthrough through a certificate-holding agent also keeps its credential home.
          t.ok(
            head && head.status >= 400 && isStatus(head, head.status),
            `${what}: refused with a Status (${head?.status})`,
          );
          continue;
        }
        const got = fakeMember.requests[seen]!;
        t.notOk(got.clientCertificate, `${what}: no client certificate on the member connection`);
        t.equal(
          (got.head.match(/^authorization:.*$/gim) ?? []).map((a) => a.trim().toLowerCase()).join(" | "),
          "authorization: bearer caller-own-token",
          `${what}: only the caller's own Authorization`,
        );
      }
    });

    await t.test("a 2-group user is authorized by either group on the real member", async (t) => {
      const r = await member.kubectl(["get", "pods", "-n", "default", "-o", "name"], {
        kubeconfig: carol.m1.kubeconfig,
      });
      t.equal(r.code, 0, `carol (devs, admins) may list pods as tether:admins ${r.stderr.trim()}`);
    });

    await t.test("the member switches to another protocol than asked: no splice", async (t) => {
      fakeMember.mode = "switch-always";
      try {
        const marker = `/after-a-wrong-101-${randomBytes(4).toString("hex")}`;
        const { conn, head } = await exchange(
          hostileTarget,
          requestHead(
            "POST",
            "/clusters/fake/api/v1/namespaces/default/pods/box/exec?command=sh&stdin=true",
            [
              host,
              auth(alice.fake.token),
              ["Connection", "Upgrade"],
              ["Upgrade", "SPDY/3.1"],
              ["X-Stream-Protocol-Version", "v4.channel.k8s.io"],
            ],
          ) + requestHead("GET", marker, [host]),
          10_000,
        );
        // The fake member answers "101, Upgrade: websocket" to a request for SPDY/3.1.
        await conn.waitUntil((c) => c.closed, 5_000);
        conn.destroy();
        t.not(head?.status, 101, `the caller is not switched (got ${head?.status ?? "nothing"})`);
        t.ok(conn.closed, "and the connection is closed");
        t.notMatch(fakeMember.all, marker, "the caller's later bytes never reach the member");
      } finally {
        fakeMember.mode = "normal";
      }
    });

    await t.test("the member answers 101 to a plain request: 502, not a hang", async (t) => {
      fakeMember.mode = "switch-always";
      try {
        const { conn, head } = await exchange(
          hostileTarget,
          requestHead("GET", "/clusters/fake/version", [host, auth(alice.fake.token)]),
          10_000,
        );
        conn.destroy();
        t.equal(head?.status, 502, `plain GET answered ${head?.status ?? "nothing within 10 s"}`);
        t.ok(isStatus(head, 502), "with a Status body");
      } finally {
        fakeMember.mode = "normal";
      }
    });
  },
  [
    ["m1", alice.m1.kubeconfig, "full"],
    ["fake", alice.fake.kubeconfig, "raw"],
  ],
);

// ---- 3: streams one caller can hold --------------------------------------

const watchRequest = (cluster: string, token: string) =>
  requestHead("GET", `/clusters/${cluster}/api/v1/namespaces/hostile/configmaps?watch=true`, [
    host,
    auth(token),
  ]);
const execRequest = (cluster: string, token: string, command: string[], stdin = false) =>
  requestHead(
    "GET",
    `/clusters/${cluster}/api/v1/namespaces/hostile/pods/box/exec?${command.map((c) => `command=${encodeURIComponent(c)}`).join("&")}&stdout=true${stdin ? "&stdin=true" : ""}`,
    [host, auth(token), ...websocketUpgrade()],
  );

/** Opens a watch on a new connection; resolves with the connection and its response head. */
async function holdWatch(cluster: string, token: string) {
  const conn = await tlsOpen(hostileTarget);
  conn.write(watchRequest(cluster, token));
  return { conn, head: await conn.responseHead(15_000) };
}

hostile("3: one caller holding more streams than its quota", async (t) => {
  const held: RawConnection[] = [];
  try {
    for (let i = 0; i < PER_CALLER; i++) {
      const { conn, head } = await holdWatch("m1", mallory.m1.token);
      held.push(conn);
      t.equal(head?.status, 200, `watch ${i + 1} of ${PER_CALLER} is served`);
    }
    const { conn, head } = await holdWatch("m1", mallory.m1.token);
    held.push(conn);
    await conn.response(5_000);
    t.equal(head?.status, 429, `watch ${PER_CALLER + 1}: ${head?.status}`);
    t.ok(isStatus(conn.head, 429), "a Status body");
    t.ok(head?.headers["retry-after"], "with Retry-After");
    const up = await exchange(hostileTarget, execRequest("m1", mallory.m1.token, ["cat"], true));
    held.push(up.conn);
    t.equal(up.head?.status, 429, `an exec upgrade over the quota: ${up.head?.status}`);
    t.ok(isStatus(up.head, 429), "a Status body");
    t.ok(up.head?.headers["retry-after"], "with Retry-After");
    await legitimateCaller(t, "m1 (while mallory holds her quota)", alice.m1.kubeconfig);
    // Passthrough: the caller is its Authorization header (its SHA-256).
    for (let i = 0; i < PER_CALLER; i++) {
      const w = await holdWatch("m1pass", member.admin.token);
      held.push(w.conn);
      t.equal(w.head?.status, 200, `passthrough watch ${i + 1} of ${PER_CALLER} is served`);
    }
    const over = await holdWatch("m1pass", member.admin.token);
    held.push(over.conn);
    await over.conn.response(5_000);
    t.equal(
      over.head?.status,
      429,
      `passthrough watch ${PER_CALLER + 1}, same bearer token: ${over.head?.status}`,
    );
    t.ok(isStatus(over.conn.head, 429), "a Status body");
    const other = await holdWatch("m1pass", `${member.admin.token}-but-another`);
    held.push(other.conn);
    t.not(other.head?.status, 429, `another bearer token has its own quota (${other.head?.status})`);
  } finally {
    for (const c of held) c.destroy();
  }
  await until("mallory's quota is given back when her connections close", async () => {
    const { conn, head } = await exchange(
      hostileTarget,
      requestHead("GET", "/clusters/m1/api/v1/namespaces/hostile/configmaps", [host, auth(mallory.m1.token)]),
    );
    conn.destroy();
    return head?.status === 200;
  });
  t.pass("mallory is served again once her connections are gone");
});

hostile(
  "3: the session's stream limit reached",
  async (t) => {
    const held: RawConnection[] = [];
    const statuses: (number | string)[] = [];
    try {
      for (const token of [mallory.m1small.token, mallory2.m1small.token]) {
        for (let i = 0; i < PER_CALLER; i++) {
          const { conn, head } = await holdWatch("m1small", token);
          held.push(conn);
          if (head?.status !== 200) await conn.response(5_000);
          statuses.push(head?.status ?? (conn.closed ? "closed without a response" : "no response"));
          if (head && head.status !== 200) {
            t.equal(head.status, 503, `a watch past the session's ${SMALL_SESSION} streams: ${head.status}`);
            t.ok(isStatus(conn.head, 503), "a Status body");
            t.ok(head.headers["retry-after"], "with Retry-After");
          }
        }
      }
      t.comment(`watches on m1small (agent takes ${SMALL_SESSION} streams): ${statuses.join(", ")}`);
      t.ok(statuses.includes(503), "the session limit was hit and answered 503");
      t.notOk(
        statuses.some((s) => typeof s === "string"),
        "no request was dropped without a status",
      );
      const up = await exchange(hostileTarget, execRequest("m1small", mallory2.m1small.token, ["cat"], true));
      held.push(up.conn);
      t.equal(
        up.head?.status,
        503,
        `an exec upgrade at the session limit: ${up.head?.status ?? "no response"}`,
      );
      t.ok(isStatus(up.head, 503), "a Status body, not a dropped connection");
      t.ok(up.head?.headers["retry-after"], "with Retry-After");
    } finally {
      for (const c of held) c.destroy();
    }
  },
  [
    ["m1small", alice.m1small.kubeconfig, "full"],
    ["m1", alice.m1.kubeconfig, "get"],
  ],
);

hostile("3: an upgraded connection left idle", async (t) => {
  const { conn, head } = await exchange(
    hostileTarget,
    execRequest("m1", mallory.m1.token, ["sleep", "3600"]),
  );
  t.equal(head?.status, 101, "the exec is upgraded");
  const closed = await conn.waitUntil((c) => c.closed, 20_000);
  conn.destroy();
  t.ok(closed, "the server closes an upgraded connection with no bytes either way (--stream-idle-timeout)");
  const ticks = await member.kubectl(
    ["exec", "box", "--", "sh", "-c", "for i in 1 2 3 4 5 6; do echo tick; sleep 1; done"],
    { kubeconfig: alice.m1.kubeconfig },
  );
  t.equal(
    ticks.stdout,
    "tick\n".repeat(6),
    `an exec that keeps talking outlives the idle timeout ${ticks.stderr.trim()}`,
  );
});

// ---- 4: connections that never finish a request --------------------------

hostile("4: slowloris, idle and handshake-less connections", async (t) => {
  const drips: NodeJS.Timeout[] = [];
  const kinds: { name: string; conns: RawConnection[] }[] = [];
  try {
    const slow = await Promise.all(Array.from({ length: 50 }, () => tlsOpen(hostileTarget)));
    for (const c of slow) {
      c.write("GET /clusters/m1/version HTTP/1.1\r\nHost: 127.0.0.1\r\n");
      drips.push(setInterval(() => c.write(`X-Drip-${randomBytes(2).toString("hex")}: 1\r\n`), 500));
    }
    kinds.push({ name: "slowloris (headers never end)", conns: slow });
    kinds.push({
      name: "TLS, then nothing",
      conns: await Promise.all(Array.from({ length: 50 }, () => tlsOpen(hostileTarget))),
    });
    kinds.push({
      name: "TCP, no TLS handshake",
      conns: await Promise.all(Array.from({ length: 50 }, () => tcpOpen(hostileTarget))),
    });
    const agentSlow = await Promise.all(
      Array.from({ length: 20 }, () =>
        tlsOpen({ ...hostileTarget, cert: creds.m1.certPem, key: creds.m1.keyPem }),
      ),
    );
    for (const c of agentSlow) {
      c.write("GET /agent/v1/connect HTTP/1.1\r\nHost: 127.0.0.1\r\n");
      drips.push(setInterval(() => c.write(`X-Drip-${randomBytes(2).toString("hex")}: 1\r\n`), 500));
    }
    kinds.push({ name: "agent endpoint, slowloris with a cluster certificate", conns: agentSlow });
    t.comment(`server fds with them open: ${fdCount(pid)} (baseline ${baseline.fds})`);
    const start = Date.now();
    await Promise.all(
      kinds.map(async (k) => {
        const all = await Promise.race([
          Promise.all(k.conns.map((c) => c.closedPromise)).then(() => true),
          new Promise<boolean>((r) => setTimeout(() => r(false), CLOSE_BOUND_MS)),
        ]);
        const open = k.conns.filter((c) => !c.closed).length;
        t.ok(
          all,
          `${k.name}: all ${k.conns.length} closed by the server (${open} still open after ${Date.now() - start} ms)`,
        );
      }),
    );
  } finally {
    for (const d of drips) clearInterval(d);
    for (const k of kinds) for (const c of k.conns) c.destroy();
  }
});

hostile("4: more connections than --max-connections", async (t) => {
  const before = fdCount(pid);
  const sampler = new PeakSampler(pid, 20);
  const conns = await Promise.all(Array.from({ length: MAX_CONNECTIONS + 60 }, () => tlsOpen(hostileTarget)));
  const { peakFds } = sampler.stop();
  const open = conns.filter((c) => c.established && !c.closed).length;
  for (const c of conns) c.destroy();
  t.comment(
    `${conns.length} TLS connections tried: ${open} open at once; server fds ${before} → peak ${peakFds}`,
  );
  t.ok(open <= MAX_CONNECTIONS, `at most ${MAX_CONNECTIONS} accepted (${open})`);
  t.ok(
    peakFds - before <= MAX_CONNECTIONS,
    `server fds grew by at most ${MAX_CONNECTIONS} (${peakFds - before})`,
  );
});

// ---- 5, 9: a hostile agent with the cluster's certificate ----------------

// The issue's scale: three sessions, each with 1,000 renewal streams whose bodies never end.
const STREAMS_PER_SESSION = 1000;
const PARTIAL_BODY = 48 * 1024;

hostile("5/9: a hostile agent with m1's certificate", async (t) => {
  // The real agent is away (its certificate was stolen); the hostile one takes the cluster.
  await m1Agent.stop();
  const fakes: FakeAgent[] = [];
  try {
    await t.test("replaced sessions full of half-sent renewals", async (t) => {
      const floods: RenewalStream[][] = [];
      for (let i = 0; i < 3; i++) {
        const fake = await connectFakeAgent(url, creds.m1);
        fakes.push(fake);
        const streams = Array.from({ length: STREAMS_PER_SESSION }, () => {
          const r = new RenewalStream(fake.session);
          r.stream.write(Buffer.alloc(PARTIAL_BODY, 0x20));
          return r;
        });
        floods.push(streams);
        // Time for the server to take or reset each of them.
        await new Promise((r) => setTimeout(r, 1_500));
      }
      // A fourth connection replaces the third.
      fakes.push(await connectFakeAgent(url, creds.m1));
      t.comment(`server RSS with the hostile agent's sessions open: ${rssMiB(pid).toFixed(1)} MiB`);
      // Resets travel back through a busy session: give them time (a liveness bound).
      const stillOpen = (streams: RenewalStream[]) => streams.filter((s) => !s.settled).length;
      await until(
        "the server answered the renewal floods",
        () => floods.every((f) => stillOpen(f) <= 1),
        15_000,
      ).catch(() => {});
      for (const [i, streams] of floods.entries()) {
        const open = stillOpen(streams);
        t.ok(
          open <= 1,
          `session ${i + 1}: at most one renewal stream at a time (${open} of ${streams.length} still open)`,
        );
      }
      const closedAll = await Promise.race([
        Promise.all(fakes.slice(0, 3).map((f) => f.closed)).then(() => true),
        new Promise<boolean>((r) => setTimeout(() => r(false), 15_000)),
      ]);
      t.ok(
        closedAll,
        `the 3 replaced sessions are closed by the server (--drain-timeout): ${fakes.slice(0, 3).filter((f) => f.isClosed).length} of 3`,
      );
      t.comment(`server RSS with only the current hostile session left: ${rssMiB(pid).toFixed(1)} MiB`);
      for (const f of fakes.slice(0, 3)) f.session.close();
    });

    await t.test("an oversized renewal body is reset, not paused", async (t) => {
      const fake = fakes[3]!;
      const r = new RenewalStream(fake.session);
      r.stream.write(Buffer.alloc(100 * 1024, 0x20));
      const settled = await Promise.race([
        r.done.then(() => true),
        new Promise<boolean>((res) => setTimeout(() => res(false), 10_000)),
      ]);
      t.ok(settled && r.reset, `the stream was reset (settled ${settled}, reset ${r.reset})`);
    });

    await t.test("renewals of a certificate that is still young are refused", async (t) => {
      const fake = fakes[3]!;
      let granted = 0;
      for (let i = 0; i < 3; i++) {
        const { csrPem } = await keyAndCsr("m1");
        const r = new RenewalStream(fake.session);
        r.stream.end(JSON.stringify({ csr: csrPem }));
        await Promise.race([r.done, new Promise((res) => setTimeout(res, 10_000))]);
        if (/"certificate"/.test(r.reply)) granted++;
      }
      t.equal(granted, 0, `renewals granted to a fresh certificate: ${granted} of 3`);
    });

    await t.test("the agent answers 101 to a plain request: 502, not a hang (server end)", async (t) => {
      fakes[3]!.session.close();
      const fake = await connectFakeAgent(url, creds.m1, (stream) => {
        stream.on("error", () => {});
        stream.once("data", () =>
          stream.write(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
          ),
        );
      });
      fakes.push(fake);
      const { conn, head } = await exchange(
        legitTarget,
        requestHead("GET", "/clusters/m1/version", [host, auth(alice.m1.token)]),
        10_000,
      );
      conn.destroy();
      t.equal(head?.status, 502, `plain GET answered ${head?.status ?? "nothing within 10 s"}`);
      t.ok(isStatus(head, 502), "with a Status body");
    });
  } finally {
    for (const f of fakes) {
      f.session.close();
      f.ws.terminate();
    }
    // The hostile party is gone; the real agent comes back.
    m1Agent = await startAgent(creds.m1, saTarget);
  }
});

// ---- 6: a removed cluster, its name registered again ---------------------

const m3 = { kubeconfig: "" };
hostile(
  "6: cluster remove while its agent is connected; the name registered again",
  async (t) => {
    const old = await addAndJoin("m3");
    const fake = await connectFakeAgent(url, old);
    try {
      await admin(["cluster", "remove", "m3"]);
      const closed = await Promise.race([
        fake.closed.then(() => true),
        new Promise<boolean>((r) => setTimeout(() => r(false), 15_000)),
      ]);
      t.ok(closed, "the removed cluster's live session is closed by the running server");
      const info = JSON.parse(await admin(["cluster", "add", "m3", "--server", url, "-o", "json"])) as {
        token: string;
        caHash: string;
      };
      const again = await connectFakeAgent(url, old).then(
        (f) => {
          f.ws.terminate();
          return "connected";
        },
        (err: Error) => err.message,
      );
      t.match(again, /HTTP 403/, `the old certificate is refused by the name registered again: ${again}`);
      // The new registration's own agent joins and serves.
      const fresh = await joinCluster({ server: url, cluster: "m3", token: info.token, caHash: info.caHash });
      await startAgent(fresh, saTarget);
      m3.kubeconfig = (await user("m3", "alice", ["admins"])).kubeconfig;
    } finally {
      fake.ws.terminate();
    }
  },
  () => [
    ["m3", m3.kubeconfig, "full"],
    ["m1", alice.m1.kubeconfig, "get"],
  ],
);

// ---- 8, 9: failed authentication, joins, scope, logs ---------------------

hostile("8/9: guessing tokens, scope, what the log keeps", async (t) => {
  const leak = `LEAK-${randomBytes(6).toString("hex")}`;
  const guesses = async (request: () => string, n = 12) => {
    const out: { status: number | undefined; retryAfter: string | undefined; status429: boolean }[] = [];
    for (let i = 0; i < n; i++) {
      const { conn, head } = await exchange(hostileTarget, request());
      conn.destroy();
      out.push({
        status: head?.status,
        retryAfter: head?.headers["retry-after"],
        status429: isStatus(head, 429),
      });
    }
    return out;
  };
  const proxy = await guesses(() =>
    requestHead("GET", `/clusters/m1/api?access_token=${leak}`, [host, auth(issueToken().token)]),
  );
  const { csrPem } = await keyAndCsr("m1");
  const joins = await guesses(() => {
    const body = JSON.stringify({ cluster: "m1", token: issueToken().token, csr: csrPem });
    return (
      requestHead("POST", "/join/v1/certificate", [
        host,
        ["Content-Type", "application/json"],
        ["Content-Length", String(body.length)],
      ]) + body
    );
  });
  const admins = await guesses(() =>
    requestHead("GET", "/admin/v1/clusters", [host, auth(issueToken().token)]),
  );
  for (const [what, results] of [
    ["cluster proxy", proxy],
    ["join", joins],
    ["admin API", admins],
  ] as const) {
    t.comment(`${what}, 12 bad tokens from 127.0.0.2: ${results.map((r) => r.status).join(" ")}`);
    const limited = results.filter((r) => r.status === 429);
    t.ok(limited.length > 0, `${what}: guessing is answered 429 past --auth-failure-limit`);
    t.ok(
      limited.every((r) => r.retryAfter),
      `${what}: every 429 carries Retry-After`,
    );
    if (what !== "admin API")
      t.ok(
        limited.every((r) => r.status429),
        `${what}: every 429 is a Status`,
      );
  }
  const other = await member.kubectl(["get", "pods", "-n", "default", "-o", "name"], {
    kubeconfig: alice.m1.kubeconfig,
  });
  t.equal(other.code, 0, "a caller from another address is served meanwhile");
  const lockedMs = await until(
    "the guessing address is served with a valid token once the window passes",
    async () => {
      const { conn, head } = await exchange(
        hostileTarget,
        requestHead("GET", "/clusters/m1/api/v1/namespaces/hostile/configmaps", [
          host,
          auth(mallory.m1.token),
        ]),
      );
      conn.destroy();
      return head?.status === 200;
    },
    20_000,
  );
  t.pass("the guessing address is served again with a valid token");
  t.comment(`a valid token from the guessing address was served ${lockedMs} ms after the last guess`);

  const scoped = await exchange(
    legitTarget,
    requestHead("GET", "/clusters/m2/api", [host, auth(alice.m1.token)]),
  );
  scoped.conn.destroy();
  t.equal(
    scoped.head?.status,
    403,
    `an m1 token on m2 (which allows the user's group): ${scoped.head?.status}`,
  );

  const log = await readFile(serverLog, "utf8");
  t.notMatch(log, leak, "the server log keeps the path, not the query string");
});

t.test("summary", async (t) => {
  t.comment(`machine: ${(await readFile("/proc/loadavg", "utf8")).trim()} (loadavg)`);
  t.comment(`baseline RSS ${baseline.rss.toFixed(1)} MiB, ${baseline.fds} fds`);
  t.comment("attack | RSS before | peak | after | settled | fds peak | fds after");
  for (const f of figures) {
    t.comment(
      `${f.attack} | ${f.before.toFixed(1)} | ${f.peak.toFixed(1)} | ${f.after.toFixed(1)} | ${f.settled} | ${f.fdsPeak} | ${f.fdsAfter}`,
    );
  }
  t.ok(server.running, "tether-server is still running");
});
