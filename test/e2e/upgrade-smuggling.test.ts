// Issue 10, items 1, 2, 7 and part of 9, against a real member apiserver
// through four agents: a service-account-token agent and a client-certificate
// (system:masters kubeconfig) agent, each in impersonate and passthrough mode.
// An upgrade that does not upgrade must never leave a raw pipe to the member
// (raw TLS sockets: kubectl cannot send the attack); passthrough must never
// run as the agent's credential; several groups stay several groups; a
// hostile agent answering 101 to a plain request gets the caller a 502.
import "reflect-metadata";
import { once } from "node:events";
import { createServer } from "node:http";
import { connect as tlsConnect } from "node:tls";
import { AGENT_PATH } from "@tether/common";
import { issueToken } from "@tether/server";
import { sessionFromWebSocket, WEBSOCKET_OPTIONS } from "@tether/tunnel";
import t, { type Test } from "tap";
import WebSocket from "ws";
import { type Cluster, startClusters } from "../kube/index.js";
import { bindTetherAdmins, type Fixture, startTether, TEST_TUNNEL, tokenFor, until } from "./fixture.js";

const set = await startClusters(1);
t.teardown(() => set.stop());
const tether: Fixture = await startTether();
t.teardown(() => tether.stop());
const member = set.clusters[0] as Cluster;

const AGENTS = [
  { name: "sa-imp", credential: "service-account", mode: "impersonate" },
  { name: "cert-imp", credential: "client-certificate", mode: "impersonate" },
  { name: "sa-pt", credential: "service-account", mode: "passthrough" },
  { name: "cert-pt", credential: "client-certificate", mode: "passthrough" },
] as const;
for (const a of AGENTS) {
  await tether.registerCluster(a.name, a.mode);
  await tether.startAgent(a.name, member, { credential: a.credential });
}
await bindTetherAdmins(member);
await member.createPod("default", "box");

// A member service account with pod read access only: the passthrough caller.
await member.api(
  "POST",
  "/api/v1/namespaces/default/serviceaccounts",
  { metadata: { name: "pt-user" } },
  [409],
);
await member.api("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", {
  metadata: { name: "pt-pod-reader" },
  rules: [{ apiGroups: [""], resources: ["pods"], verbs: ["get", "list"] }],
});
await member.api("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
  metadata: { name: "pt-user-reads-pods" },
  roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "pt-pod-reader" },
  subjects: [{ kind: "ServiceAccount", name: "pt-user", namespace: "default" }],
});
const memberToken = await tokenFor(member, "default", "pt-user");

/** A raw Tether token (not a kubeconfig) for user on cluster. */
async function tetherToken(cluster: string, user: string, groups: string[] = []): Promise<string> {
  const { token, hash } = issueToken();
  await tether.store.addToken({
    hash,
    kind: "user",
    user,
    groups,
    clusters: [cluster],
    expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  });
  return token;
}

/** The caller a hostile test uses: no RBAC at all on the member, or a garbage member token. */
const hostileToken = async (a: (typeof AGENTS)[number]) =>
  a.mode === "impersonate" ? await tetherToken(a.name, "mallory") : "not-a-member-token";

const serverPort = Number(new URL(tether.server.url).port);

/** Writes `text` on a fresh TLS connection to Tether; collects what comes back until it closes (bounded). */
async function raw(
  text: string,
  opts: { afterHead?: string; limitMs?: number } = {},
): Promise<{ text: string; closed: boolean }> {
  const sock = tlsConnect({ host: "127.0.0.1", port: serverPort, ca: tether.ca.certPem });
  sock.on("error", () => {});
  await once(sock, "secureConnect");
  let got = "";
  sock.setEncoding("utf8");
  sock.on("data", (d: string) => {
    got += d;
    if (opts.afterHead && got.includes("\r\n\r\n")) {
      // A second try once the answer is in: the connection must not carry it either.
      sock.write(opts.afterHead);
      opts.afterHead = undefined;
    }
  });
  sock.write(text);
  const closed = await Promise.race([
    once(sock, "close").then(() => true),
    new Promise<boolean>((r) => setTimeout(() => r(false), opts.limitMs ?? 10_000)),
  ]);
  sock.destroy();
  return { text: got, closed };
}

const responses = (text: string) => text.match(/^HTTP\/1\.[01] \d{3} /gm) ?? [];

/** A legitimate caller of the cluster is still served. */
async function stillServed(t: Test, a: (typeof AGENTS)[number]): Promise<void> {
  const token = a.mode === "impersonate" ? await tetherToken(a.name, "alice", ["admins"]) : memberToken;
  const res = await fetchWith(token, `/clusters/${a.name}/api/v1/namespaces/default/pods/box`);
  t.equal(res.status, 200, `${a.name}: a legitimate caller is still served`);
}

async function fetchWith(token: string, path: string): Promise<{ status: number; body: string }> {
  const r = await raw(
    `GET ${path} HTTP/1.1\r\nHost: tether\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`,
  );
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(r.text)?.[1] ?? 0);
  return { status, body: r.text.slice(r.text.indexOf("\r\n\r\n") + 4) };
}

for (const a of AGENTS) {
  t.test(`${a.name}: an upgrade that does not upgrade never becomes a raw pipe`, async (t) => {
    const token = await hostileToken(a);
    const smuggled = "GET /api/v1/namespaces/kube-system/secrets HTTP/1.1\r\nHost: x\r\n\r\n";
    for (const protocol of ["websocket", "SPDY/3.1"]) {
      const head =
        `GET /clusters/${a.name}/version HTTP/1.1\r\nHost: tether\r\nAuthorization: Bearer ${token}\r\n` +
        `Connection: Upgrade\r\nUpgrade: ${protocol}\r\n\r\n`;
      const r = await raw(head + smuggled, { afterHead: smuggled });
      t.ok(r.closed, `${protocol}: Tether closes the connection after the answer`);
      t.equal(responses(r.text).length, 1, `${protocol}: exactly one response, the one to /version`);
      t.match(r.text, /\r\nConnection: close\r\n/i, `${protocol}: relayed as an ordinary response`);
      t.notMatch(r.text, /SecretList|secrets/, `${protocol}: the pipelined request never reached the member`);
      if (a.mode === "impersonate") t.match(r.text, /gitVersion/, "the /version answer itself is relayed");
      else t.match(r.text, /^HTTP\/1\.1 401/, "the member refuses the garbage token itself");
    }
    await stillServed(t, a);
  });

  t.test(`${a.name}: upgrades other than websocket and SPDY/3.1 are refused with 400`, async (t) => {
    const token = await hostileToken(a);
    for (const protocol of ["h2c", "foo", "websocket, h2c"]) {
      const r = await raw(
        `GET /clusters/${a.name}/version HTTP/1.1\r\nHost: tether\r\nAuthorization: Bearer ${token}\r\n` +
          `Connection: Upgrade\r\nUpgrade: ${protocol}\r\n\r\nGET /api/v1/namespaces/kube-system/secrets HTTP/1.1\r\n\r\n`,
      );
      t.match(r.text, /^HTTP\/1\.1 400 /, protocol);
      t.match(r.text, /"reason":"BadRequest"/);
      t.equal(responses(r.text).length, 1);
      t.ok(r.closed, "and the connection is closed");
    }
    await stillServed(t, a);
  });
}

t.test("many smuggling attempts hold no stream and no memory once they are gone", async (t) => {
  const a = AGENTS[1]; // the client-certificate agent, where a raw pipe would be system:masters
  const token = await hostileToken(a);
  await stillServed(t, a);
  const streams = () => tether.server.sessions.get(a.name)?.session.streamCount ?? -1;
  const baseline = { streams: streams(), rss: process.memoryUsage().rss };
  const attempt = (i: number) =>
    raw(
      `GET /clusters/${a.name}/version HTTP/1.1\r\nHost: tether\r\nAuthorization: Bearer ${token}\r\n` +
        `Connection: Upgrade\r\nUpgrade: ${i % 2 ? "websocket" : "SPDY/3.1"}\r\n\r\n` +
        "GET /api/v1/namespaces/kube-system/secrets HTTP/1.1\r\nHost: x\r\n\r\n",
    );
  let answered = 0;
  for (let batch = 0; batch < 10; batch++) {
    const rs = await Promise.all(Array.from({ length: 20 }, (_v, i) => attempt(batch * 20 + i)));
    answered += rs.filter(
      (r) => r.closed && responses(r.text).length === 1 && !/SecretList/.test(r.text),
    ).length;
  }
  t.equal(answered, 200, "200 attempts: each got one answer and a closed connection");
  await until("the attempts' streams are gone", () => streams() <= baseline.streams, 10_000);
  t.ok(streams() <= baseline.streams, `streams back to ${baseline.streams}`);
  const rss = process.memoryUsage().rss;
  t.comment(
    `test process RSS (server, agents and test in one process): ${(baseline.rss / 2 ** 20).toFixed(0)} MiB before, ${(rss / 2 ** 20).toFixed(0)} MiB after 200 attempts`,
  );
  await stillServed(t, a);
});

for (const a of AGENTS.filter((x) => x.mode === "impersonate")) {
  t.test(`${a.name}: exec and port-forward still work`, async (t) => {
    const kubeconfig = await tether.userKubeconfig(a.name, "alice", ["admins"]);
    for (const transport of ["websocket", "spdy"] as const) {
      const env = {
        ...process.env,
        KUBECTL_REMOTE_COMMAND_WEBSOCKETS: transport === "websocket" ? "true" : "false",
        KUBECTL_PORT_FORWARD_WEBSOCKETS: transport === "websocket" ? "true" : "false",
      };
      const r = await member.kubectl(
        ["exec", "-i", "box", "-v=6", "--", "sh", "-c", "cat; echo out-$0 >&2"],
        {
          kubeconfig,
          input: `in-${transport}`,
          env,
        },
      );
      t.equal(r.code, 0, r.stderr);
      t.equal(r.stdout, `in-${transport}`, `exec over ${transport}: stdin and stdout`);
      t.match(r.stderr, /out-sh/, "stderr");
      t.match(
        r.stderr,
        new RegExp(
          `verb="${transport === "websocket" ? "GET" : "POST"}" url="[^"]+/exec\\?[^"]*" status="101`,
        ),
      );

      const http = createServer((req, res) => res.end(`hello ${req.url}`));
      await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
      const port = (http.address() as { port: number }).port;
      const pf = member.spawnKubectl(["port-forward", "-v=6", "pod/box", `:${port}`], { kubeconfig, env });
      try {
        const m = await pf.waitFor(/Forwarding from 127\.0\.0\.1:(\d+) ->/);
        const body = await (await fetch(`http://127.0.0.1:${m[1]}/pf-${transport}`)).text();
        t.equal(body, `hello /pf-${transport}`, `port-forward over ${transport}`);
      } finally {
        await pf.stop();
        await new Promise<void>((r) => http.close(() => r()));
      }
    }
  });
}

for (const a of AGENTS.filter((x) => x.mode === "passthrough")) {
  t.test(`${a.name}: passthrough presents no agent credential`, async (t) => {
    const garbage = await fetchWith(
      "not-a-member-token",
      `/clusters/${a.name}/api/v1/namespaces/kube-system/secrets`,
    );
    t.equal(garbage.status, 401, "plain: a garbage token is refused by the member, not run as the agent");
    const whoami = await member.kubectl(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"], {
      kubeconfig: await tether.rawKubeconfig(a.name, memberToken),
    });
    t.equal(whoami.code, 0, whoami.stderr);
    t.equal(
      whoami.stdout,
      "system:serviceaccount:default:pt-user",
      "plain: the member sees the caller's own SA",
    );
    const secrets = await fetchWith(memberToken, `/clusters/${a.name}/api/v1/namespaces/kube-system/secrets`);
    t.equal(secrets.status, 403, "and that SA's rights, not the agent's");

    const exec = (token: string) =>
      raw(
        `GET /clusters/${a.name}/api/v1/namespaces/default/pods/box/exec?command=id&stdout=true HTTP/1.1\r\n` +
          `Host: tether\r\nAuthorization: Bearer ${token}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
          "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
          "Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n",
      );
    const upGarbage = await exec("not-a-member-token");
    t.match(upGarbage.text, /^HTTP\/1\.1 401 /, "upgrade: a garbage token is refused by the member");
    t.ok(upGarbage.closed);
    const upSa = await exec(memberToken);
    t.match(upSa.text, /^HTTP\/1\.1 403 /, "upgrade: the SA may not exec");
    t.match(upSa.text, /system:serviceaccount:default:pt-user/, "upgrade: it ran as the caller's SA");
    await stillServed(t, a);
  });
}

t.test("several groups stay several groups on GET, watch, exec and port-forward", async (t) => {
  await member.api("POST", "/api/v1/namespaces", { metadata: { name: "groups-ns" } }, [409]);
  await member.createPod("groups-ns", "gbox");
  await member.api("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/groups-ns/roles", {
    metadata: { name: "pod-user" },
    rules: [
      { apiGroups: [""], resources: ["pods"], verbs: ["get", "list", "watch"] },
      { apiGroups: [""], resources: ["pods/exec", "pods/portforward"], verbs: ["get", "create"] },
    ],
  });
  // Each binding names only one of the user's groups.
  for (const group of ["two-b", "three-b"]) {
    await member.api("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/groups-ns/rolebindings", {
      metadata: { name: `pod-user-${group}` },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "pod-user" },
      subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "Group", name: `tether:${group}` }],
    });
  }
  const users = [
    { user: "dana", groups: ["two-a", "two-b"] },
    { user: "erin", groups: ["three-a", "three-b", "three-c"] },
  ];
  for (const a of AGENTS.filter((x) => x.mode === "impersonate")) {
    const outsider = await tether.userKubeconfig(a.name, "frank", ["two-a", "three-c"]);
    const refused = await member.kubectl(["get", "pods", "-n", "groups-ns"], { kubeconfig: outsider });
    t.not(refused.code, 0, `${a.name}: the other groups alone grant nothing (the test can fail)`);
    for (const u of users) {
      const what = `${a.name}, ${u.groups.length} groups`;
      const kubeconfig = await tether.userKubeconfig(a.name, u.user, u.groups);
      const get = await member.kubectl(["get", "pods", "-n", "groups-ns", "-o", "name"], { kubeconfig });
      t.equal(get.code, 0, `${what}: GET: ${get.stderr}`);
      t.match(get.stdout, /pod\/gbox/);

      const watch = member.spawnKubectl(["get", "pods", "-n", "groups-ns", "-w", "--output-watch-events"], {
        kubeconfig,
      });
      try {
        await watch.waitFor(/ADDED\s+gbox/);
        t.pass(`${what}: watch`);
      } finally {
        await watch.stop();
      }

      const exec = await member.kubectl(
        ["exec", "-n", "groups-ns", "gbox", "--", "sh", "-c", "echo in-gbox"],
        {
          kubeconfig,
        },
      );
      t.equal(exec.code, 0, `${what}: exec: ${exec.stderr}`);
      t.equal(exec.stdout, "in-gbox\n");

      const http = createServer((_req, res) => res.end("forwarded"));
      await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
      const pf = member.spawnKubectl(
        ["port-forward", "-n", "groups-ns", "pod/gbox", `:${(http.address() as { port: number }).port}`],
        { kubeconfig },
      );
      try {
        const m = await pf.waitFor(/Forwarding from 127\.0\.0\.1:(\d+) ->/);
        t.equal(
          await (await fetch(`http://127.0.0.1:${m[1]}/`)).text(),
          "forwarded",
          `${what}: port-forward`,
        );
      } finally {
        await pf.stop();
        await new Promise<void>((r) => http.close(() => r()));
      }
    }
  }
});

t.test("a hostile agent's 101 gets the caller a 502, never a hang", async (t) => {
  // An agent with a valid cluster certificate that answers every stream with a switch of protocols.
  await tether.registerCluster("hostile");
  const cert = await tether.ca.issueClusterCertificate("hostile");
  await tether.store.recordIssued(cert.serial, "hostile", cert.notAfter.toISOString());
  let answer = "";
  const ws = new WebSocket(new URL(AGENT_PATH, tether.server.url).toString().replace(/^http/, "ws"), {
    ...WEBSOCKET_OPTIONS,
    ca: tether.ca.certPem,
    cert: cert.certPem,
    key: cert.keyPem!,
  });
  await once(ws, "open");
  const session = sessionFromWebSocket(ws, { ...TEST_TUNNEL, role: "client", accept: () => true });
  t.teardown(() => session.close());
  session.on("stream", (stream) => {
    let got = "";
    stream.on("error", () => {});
    stream.on("data", (d: Buffer) => {
      got += d.toString("latin1");
      if (got.includes("\r\n\r\n")) {
        got = "";
        stream.write(answer);
      }
    });
  });
  const token = await tetherToken("hostile", "alice", ["admins"]);
  answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  await until("the hostile agent is connected", async () => {
    return (await fetchWith(token, "/clusters/hostile/version")).status === 200;
  });
  const cases = [
    [
      "101 with Upgrade to a plain GET",
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
      "plain",
    ],
    ["a bare 101 to a plain GET", "HTTP/1.1 101 Switching Protocols\r\n\r\n", "plain"],
    [
      "101 to h2c for a websocket upgrade",
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
      "upgrade",
    ],
  ] as const;
  for (const [what, reply, kind] of cases) {
    answer = reply;
    const r = await raw(
      `GET /clusters/hostile/version HTTP/1.1\r\nHost: tether\r\nAuthorization: Bearer ${token}\r\n` +
        (kind === "upgrade"
          ? "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
          : "Connection: close\r\n\r\n"),
    );
    t.match(r.text, /^HTTP\/1\.1 502 /, what);
    t.match(r.text, /"reason":"BadGateway"/);
    t.ok(r.closed, "and the connection ends");
  }
  await stillServed(t, AGENTS[0]);
});
