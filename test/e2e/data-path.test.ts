// Issue 4, must show: kubectl and @kubernetes/client-node through Tether
// against two real member clusters — CRUD, watch, exec over SPDY and
// WebSocket, port-forward, logs -f, cp, informers — with responses equal to
// direct ones, impersonation that cannot be escalated, passthrough, errors a
// person can act on, and recovery from a lost agent without leaked streams.
// data-path.host.test.ts runs this file again with host-routed kubeconfigs.
import { appendFile, readFile, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import { join } from "node:path";
import * as k8s from "@kubernetes/client-node";
import t, { type Test } from "tap";
import { type Cluster, startClusters } from "../kube/index.js";
import { bindTetherAdmins, DEFAULT_ROUTING, type Fixture, startTether, tokenFor } from "./fixture.js";

const set = await startClusters(2);
t.teardown(() => set.stop());
const tether: Fixture = await startTether();
t.teardown(() => tether.stop());
const [m1, m2] = set.clusters as [Cluster, Cluster];

// Two members in impersonate mode, plus m2 again in passthrough mode through a second agent.
await tether.registerCluster("member1");
await tether.registerCluster("member2");
await tether.registerCluster("member2-direct", "passthrough");
await tether.registerCluster("member3"); // registered, but no agent ever connects
const agents = {
  member1: await tether.startAgent("member1", m1),
  member2: await tether.startAgent("member2", m2),
  direct: await tether.startAgent("member2-direct", m2),
};

// On each member, the Tether group "admins" is cluster-admin.
for (const m of [m1, m2]) {
  await bindTetherAdmins(m);
  await m.createPod("default", "box");
}

const kc = {
  member1: await tether.userKubeconfig("member1", "alice", ["admins"]),
  member2: await tether.userKubeconfig("member2", "alice", ["admins"]),
};
const members = [
  { name: "member1", cluster: m1, kubeconfig: kc.member1 },
  { name: "member2", cluster: m2, kubeconfig: kc.member2 },
] as const;

function json<T>(text: string): T {
  return JSON.parse(text) as T;
}

for (const { name, cluster, kubeconfig } of members) {
  t.test(`kubectl through Tether: ${name}`, async (t) => {
    const k = (args: string[], input?: string) =>
      cluster.kubectl(args, { kubeconfig, ...(input !== undefined ? { input } : {}) });

    await t.test("get equals the direct answer", async (t) => {
      const via = await k(["get", "namespaces", "-o", "json"]);
      t.equal(via.code, 0, via.stderr);
      const direct = await cluster.kubectl(["get", "namespaces", "-o", "json"]);
      const names = (s: string) =>
        json<{ items: { metadata: { name: string } }[] }>(s).items.map((i) => i.metadata.name);
      t.same(names(via.stdout), names(direct.stdout));
    });

    await t.test("apply, get, delete", async (t) => {
      const cm = { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "via-tether" }, data: { k: name } };
      const applied = await k(["apply", "-f", "-"], JSON.stringify(cm));
      t.equal(applied.code, 0, applied.stderr);
      t.match(applied.stdout, /configmap\/via-tether (created|configured)/);
      const direct = await cluster.kubectl(["get", "configmap", "via-tether", "-o", "jsonpath={.data.k}"]);
      t.equal(direct.stdout, name, "the object exists in the member cluster");
      const del = await k(["delete", "configmap", "via-tether"]);
      t.equal(del.code, 0, del.stderr);
      const gone = await cluster.kubectl(["get", "configmap", "via-tether"]);
      t.match(gone.stderr, /NotFound/);
    });

    await t.test("get -w receives events", async (t) => {
      await cluster.kubectl(["create", "configmap", "before-watch"]);
      const watch = cluster.spawnKubectl(["get", "configmaps", "-w", "--output-watch-events"], {
        kubeconfig,
      });
      t.teardown(() => watch.stop());
      // The initial list arrives first: after it the watch is established.
      await watch.waitFor(/ADDED\s+before-watch/);
      await cluster.kubectl(["create", "configmap", "watched-through-tether", "--from-literal=a=b"]);
      await watch.waitFor(/ADDED\s+watched-through-tether/);
      await cluster.kubectl(["delete", "configmap", "watched-through-tether"]);
      await watch.waitFor(/DELETED\s+watched-through-tether/);
      t.pass("ADDED and DELETED arrived through the tunnel");
    });

    for (const transport of ["websocket", "spdy"] as const) {
      await t.test(`exec over ${transport}`, async (t) => {
        const env = {
          ...process.env,
          KUBECTL_REMOTE_COMMAND_WEBSOCKETS: transport === "websocket" ? "true" : "false",
        };
        const r = await cluster.kubectl(
          ["exec", "-i", "box", "-v=6", "--", "sh", "-c", "cat; echo; echo out-$0 >&2"],
          {
            kubeconfig,
            input: `in-${transport}`,
            env,
          },
        );
        t.equal(r.code, 0, r.stderr);
        t.equal(r.stdout, `in-${transport}\n`);
        t.match(r.stderr, /out-sh/);
        // kubectl -v=6 logs the upgrade it made: a GET for WebSocket, a POST for SPDY.
        t.match(
          r.stderr,
          new RegExp(
            `verb="${transport === "websocket" ? "GET" : "POST"}" url="[^"]+/exec\\?[^"]*" status="101`,
          ),
        );
        const failed = await cluster.kubectl(["exec", "box", "--", "sh", "-c", "exit 7"], {
          kubeconfig,
          env,
        });
        t.equal(failed.code, 7, "exit codes come back");
      });
    }

    for (const transport of ["websocket", "spdy"] as const) {
      await t.test(`port-forward over ${transport}`, async (t) => {
        const http = createServer((req, res) => res.end(`hello ${req.url} on ${name}`));
        await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
        t.teardown(() => new Promise<void>((r) => http.close(() => r())));
        const port = (http.address() as { port: number }).port;
        const env = {
          ...process.env,
          KUBECTL_PORT_FORWARD_WEBSOCKETS: transport === "websocket" ? "true" : "false",
        };
        const pf = cluster.spawnKubectl(["port-forward", "-v=6", "pod/box", `:${port}`], { kubeconfig, env });
        t.teardown(() => pf.stop());
        const m = await pf.waitFor(/Forwarding from 127\.0\.0\.1:(\d+) ->/);
        for (let i = 0; i < 3; i++) {
          const body = await (await fetch(`http://127.0.0.1:${m[1]}/try${i}`)).text();
          t.equal(body, `hello /try${i} on ${name}`);
        }
        // A GET upgrade for WebSocket, a POST for SPDY, as with exec.
        await pf.waitFor(
          new RegExp(
            `verb="${transport === "websocket" ? "GET" : "POST"}" url="[^"]+/portforward[^"]*" status="101`,
          ),
          10_000,
          "stderr",
        );
      });
    }

    await t.test("logs -f", async (t) => {
      const file = cluster.logFile("default", "box", "main");
      await appendFile(file, `first ${name}\n`);
      const logs = cluster.spawnKubectl(["logs", "-f", "box"], { kubeconfig });
      t.teardown(() => logs.stop());
      await logs.waitFor(/first/);
      await appendFile(file, "second\n");
      await logs.waitFor(/second\n/);
      t.equal(logs.stdout, `first ${name}\nsecond\n`);
    });

    await t.test("cp both ways", async (t) => {
      const local = join(tether.dir, `cp-${name}.txt`);
      const content = `copied through tether to ${name}\n`.repeat(1000);
      await writeFile(local, content);
      const remote = `/tmp/tether-cp-${process.pid}-${name}.txt`;
      t.teardown(() => cluster.kubectl(["exec", "box", "--", "rm", "-f", remote]));
      const up = await k(["cp", local, `default/box:${remote}`]);
      t.equal(up.code, 0, up.stderr);
      const back = join(tether.dir, `cp-back-${name}.txt`);
      const down = await k(["cp", `default/box:${remote}`, back]);
      t.equal(down.code, 0, down.stderr);
      t.equal(await readFile(back, "utf8"), content);
    });
  });
}

t.test("@kubernetes/client-node through Tether: list, watch, informer", { timeout: 60_000 }, async (t) => {
  const config = new k8s.KubeConfig();
  config.loadFromFile(kc.member1);
  const core = config.makeApiClient(k8s.CoreV1Api);
  const list = await core.listNamespacedPod({ namespace: "default" });
  t.ok(
    list.items.some((p) => p.metadata?.name === "box"),
    "list sees the pod",
  );

  const events: string[] = [];
  const watch = new k8s.Watch(config);
  let sawWatch: () => void = () => {};
  const watched = new Promise<void>((r) => {
    sawWatch = r;
  });
  const req = await watch.watch(
    "/api/v1/namespaces/default/configmaps",
    {},
    (type, obj: k8s.V1ConfigMap) => {
      if (obj.metadata?.name === "cn-watch") {
        events.push(type);
        sawWatch();
      }
    },
    () => {},
  );
  t.teardown(() => req.abort());

  const informer = k8s.makeInformer(config, "/api/v1/namespaces/default/configmaps", () =>
    core.listNamespacedConfigMap({ namespace: "default" }),
  );
  const informed = new Promise<string>((resolve) => {
    informer.on("add", (obj) => {
      if (obj.metadata?.name === "cn-informer") resolve(obj.data?.x ?? "");
    });
  });
  await informer.start();
  t.teardown(() => informer.stop());

  await m1.kubectl(["create", "configmap", "cn-watch", "--from-literal=x=1"]);
  await m1.kubectl(["create", "configmap", "cn-informer", "--from-literal=x=informed"]);
  await watched;
  t.same(events.slice(0, 1), ["ADDED"]);
  t.equal(await informed, "informed", "the informer's cache got the object");
  t.ok(
    informer.list("default").some((o) => o.metadata?.name === "cn-informer"),
    "and lists it from its cache",
  );
});

t.test("responses through Tether equal direct ones", async (t) => {
  const get = async (
    server: string,
    path: string,
    auth: { token?: string; ca: string; cert?: string; key?: string },
  ) => {
    const { request } = await import("node:https");
    return new Promise<{ status: number; body: string; type: string | undefined }>((resolve, reject) => {
      const req = request(
        `${server}${path}`,
        {
          ca: auth.ca,
          ...(auth.cert ? { cert: auth.cert, key: auth.key } : {}),
          headers: {
            accept: "application/json",
            ...(auth.token ? { authorization: `Bearer ${auth.token}` } : {}),
          },
        },
        (res) => {
          let body = "";
          res.setEncoding("utf8");
          res.on("data", (c: string) => (body += c));
          res.on("end", () =>
            resolve({ status: res.statusCode ?? 0, body, type: res.headers["content-type"] }),
          );
        },
      );
      req.on("error", reject);
      req.end();
    });
  };
  const token = (await readFile(kc.member1, "utf8")).match(/token: (\S+)/)![1]!;
  for (const path of [
    "/version",
    "/api",
    "/apis/rbac.authorization.k8s.io",
    "/api/v1/namespaces/kube-system",
    "/api/v1/namespaces/default/pods/box",
    "/api/v1/namespaces/default/configmaps/does-not-exist",
  ]) {
    const via = await get(`${tether.server.url}/clusters/member1`, path, { token, ca: tether.ca.certPem });
    const direct = await get(m1.server, path, { ca: m1.caPem, cert: m1.admin.certPem, key: m1.admin.keyPem });
    t.equal(via.status, direct.status, `${path}: status`);
    t.equal(via.type, direct.type, `${path}: content-type`);
    t.same(JSON.parse(via.body), JSON.parse(direct.body), `${path}: body`);
  }
});

t.test("impersonation: member RBAC decides, and cannot be escalated", async (t) => {
  await m1.api("POST", "/api/v1/namespaces", { metadata: { name: "team-a" } }, [409]);
  await m1.api("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/roles", {
    metadata: { name: "cm-reader" },
    rules: [{ apiGroups: [""], resources: ["configmaps"], verbs: ["get", "list", "watch"] }],
  });
  await m1.api("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/rolebindings", {
    metadata: { name: "bob-reads" },
    roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "cm-reader" },
    subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "User", name: "tether:bob" }],
  });
  const bob = await tether.userKubeconfig("member1", "bob", ["developers"]);
  const mine = await m1.kubectl(["get", "configmaps", "-n", "team-a"], { kubeconfig: bob });
  t.equal(mine.code, 0, `bob reads his namespace: ${mine.stderr}`);
  const other = await m1.kubectl(["get", "configmaps", "-n", "default"], { kubeconfig: bob });
  t.not(other.code, 0);
  t.match(other.stderr, /Forbidden.*User "tether:bob"/s, "refused elsewhere, as tether:bob");

  const escalate = await m1.kubectl(
    ["get", "configmaps", "-n", "default", "--as=system:admin", "--as-group=system:masters"],
    { kubeconfig: bob },
  );
  t.not(escalate.code, 0, "a caller's own --as needs the member's leave (impersonation.test.ts)");
  t.match(
    escalate.stderr,
    /Forbidden.*user "bob" may not impersonate user "system:admin", group "system:masters"/,
    "refused, never dropped: bob may impersonate neither",
  );

  const whoami = await m1.kubectl(["auth", "whoami", "-o", "json"], { kubeconfig: bob });
  t.equal(whoami.code, 0, whoami.stderr);
  const info = json<{ status: { userInfo: { username: string; groups: string[] } } }>(whoami.stdout).status
    .userInfo;
  t.equal(info.username, "tether:bob");
  t.ok(info.groups.includes("tether:developers"), `groups are prefixed: ${info.groups}`);
  t.notOk(info.groups.includes("system:masters"));
});

t.test("passthrough: the caller's member token works, no token is refused", async (t) => {
  await m2.api(
    "POST",
    "/api/v1/namespaces/default/serviceaccounts",
    { metadata: { name: "pt-user" } },
    [409],
  );
  // (The aggregated "view" role is empty here: no controller-manager aggregates it.)
  await m2.api("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", {
    metadata: { name: "pod-reader" },
    rules: [{ apiGroups: [""], resources: ["pods"], verbs: ["get", "list"] }],
  });
  await m2.api("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
    metadata: { name: "pt-user-view" },
    roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "pod-reader" },
    subjects: [{ kind: "ServiceAccount", name: "pt-user", namespace: "default" }],
  });
  const memberToken = await tokenFor(m2, "default", "pt-user");
  const withToken = await tether.rawKubeconfig("member2-direct", memberToken);
  const ok = await m2.kubectl(["get", "pods", "-n", "default", "-o", "name"], { kubeconfig: withToken });
  t.equal(ok.code, 0, ok.stderr);
  t.match(ok.stdout, /pod\/box/);
  const whoami = await m2.kubectl(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"], {
    kubeconfig: withToken,
  });
  t.equal(
    whoami.stdout,
    "system:serviceaccount:default:pt-user",
    "the member sees the caller's own identity",
  );
  const none = await fetchStatus(await tether.rawKubeconfig("member2-direct"));
  t.equal(none.code, 401, "no credential at all is refused by Tether itself");
  t.match(none.message, /passthrough authentication: send the member cluster's own bearer token/);
  const bogus = await m2.kubectl(["get", "pods"], {
    kubeconfig: await tether.rawKubeconfig("member2-direct", "not-a-token"),
  });
  t.not(bogus.code, 0);
  t.match(bogus.stderr, /must be logged in|Unauthorized/, "a bad member token is refused by the member");
  const tetherToken = await tether.userKubeconfig("member2-direct", "alice", ["admins"]);
  const notMember = await m2.kubectl(["get", "pods"], { kubeconfig: tetherToken });
  t.not(notMember.code, 0, "a Tether token means nothing to the member apiserver in passthrough mode");
});

t.test("errors a person can act on", async (t) => {
  const check = async (t: Test, kubeconfig: string, code: number, message: RegExp) => {
    const res = await fetchStatus(kubeconfig);
    t.equal(res.code, code);
    t.equal(res.kind, "Status");
    t.match(res.message, message);
  };
  await t.test("unknown cluster → 404", (t) =>
    tether.userKubeconfig("nope", "alice", ["admins"]).then((k) => check(t, k, 404, /not registered/)),
  );
  await t.test("no agent connected → 503", (t) =>
    tether
      .userKubeconfig("member3", "alice", ["admins"])
      .then((k) => check(t, k, 503, /no connected Tether agent/)),
  );
  await t.test("unauthenticated → 401", (t) =>
    tether.rawKubeconfig("member1").then((k) => check(t, k, 401, /could not authenticate/)),
  );
  await t.test("a wrong token → 401", (t) =>
    tether
      .rawKubeconfig("member1", "tether_not-a-real-token")
      .then((k) => check(t, k, 401, /could not authenticate/)),
  );
  await t.test("not allowed on this cluster → 403", (t) =>
    tether
      .userKubeconfig("member2", "carol", [], ["member1"])
      .then((k) => check(t, k, 403, /may not use cluster/)),
  );
  await t.test("kubectl shows it", async (t) => {
    const k = await tether.userKubeconfig("member3", "alice", ["admins"]);
    const raw = await m1.kubectl(["get", "--raw", "/api/v1/pods"], { kubeconfig: k });
    t.not(raw.code, 0);
    t.match(
      raw.stderr,
      /Error from server \(ServiceUnavailable\): cluster "member3" has no connected Tether agent/,
    );
    // Discovery errors are printed generically by kubectl; the Status is still what it received.
    const get = await m1.kubectl(["get", "pods", "-v=8"], { kubeconfig: k });
    t.not(get.code, 0);
    // With host routing every member's kubeconfig has the same server URL, and kubectl keys its
    // discovery cache by that URL: discovery comes from another member's cache and only the GET fails.
    if (DEFAULT_ROUTING === "path") t.match(get.stderr, /unable to handle the request/);
    t.match(get.stderr, /no connected Tether agent/, "the Status message is in the response kubectl logged");
    const forbidden = await m1.kubectl(["get", "pods"], {
      kubeconfig: await tether.userKubeconfig("member2", "carol", [], ["member1"]),
    });
    t.match(forbidden.stderr, /Forbidden|may not use cluster/);
  });
});

async function fetchStatus(kubeconfig: string): Promise<{ code: number; kind: string; message: string }> {
  const text = await readFile(kubeconfig, "utf8");
  const server = text.match(/server: (\S+)/)![1]!;
  const token = text.match(/token: (\S+)/)?.[1];
  const servername = text.match(/tls-server-name: (\S+)/)?.[1];
  const { request } = await import("node:https");
  return new Promise((resolve, reject) => {
    const req = request(
      `${server}/api/v1/namespaces`,
      {
        ca: tether.ca.certPem,
        headers: token ? { authorization: `Bearer ${token}` } : {},
        ...(servername ? { servername } : {}),
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (body += c));
        res.on("end", () => {
          const parsed = JSON.parse(body) as { kind: string; message: string; code: number };
          t.equal(parsed.code, res.statusCode, "Status.code matches the HTTP status");
          resolve({ code: res.statusCode ?? 0, kind: parsed.kind, message: parsed.message });
        });
      },
    );
    req.on("error", reject);
    req.end();
  });
}

t.test("a lost agent turns into 503, a returning one works again, no stream leaks", async (t) => {
  // Long-running streams first, so the drop has something to cut.
  const watch = m1.spawnKubectl(["get", "configmaps", "-w", "-o", "name"], { kubeconfig: kc.member1 });
  t.teardown(() => watch.stop());
  await new Promise((r) => setTimeout(r, 500));
  const serverSession = () => tether.server.sessions.get("member1")?.session;
  t.ok((serverSession()?.streamCount ?? 0) >= 1, "the watch holds a stream");
  t.equal(
    tether.server.sessions.get("member1")?.structuredHead,
    true,
    "today's agent reads structured heads",
  );

  await agents.member1.stop();
  const watchExit = await watch.exited;
  t.ok(watchExit !== null, "the watch ends instead of hanging");
  const down = await m1.kubectl(["get", "pods"], { kubeconfig: kc.member1 });
  t.not(down.code, 0);
  t.match(down.stderr, /no connected Tether agent/, "503 with a message while the agent is away");

  agents.member1.start();
  await agents.member1.whenConnected();
  const back = await m1.kubectl(["get", "pods", "-o", "name"], { kubeconfig: kc.member1 });
  t.equal(back.code, 0, back.stderr);
  t.match(back.stdout, /pod\/box/, "works again without restarting the server");

  // A client that disconnects mid-watch must not leave its stream open on either side.
  const w2 = m1.spawnKubectl(["get", "pods", "-w", "-o", "name"], { kubeconfig: kc.member1 });
  await w2.waitFor(/pod\/box/);
  // The list that printed pod/box has its own stream, closed with its response; the watch opens one after it.
  for (let i = 0; i < 50 && (serverSession()?.streamCount ?? 0) === 0; i++)
    await new Promise((r) => setTimeout(r, 100));
  t.ok((serverSession()?.streamCount ?? 0) >= 1, "the watch holds a stream");
  await w2.stop();
  const settled = async () => {
    for (let i = 0; i < 100; i++) {
      // Pooled keep-alive streams may stay open; idle ones are released when the pool is closed.
      for (const s of tether.server.sessions.list()) s.httpAgent("impersonate").destroy();
      if (serverSession()?.streamCount === 0 && agents.member1.session?.streamCount === 0) return true;
      await new Promise((r) => setTimeout(r, 100));
    }
    return false;
  };
  t.ok(await settled(), "no stream left open on the server or the agent");
});

t.test("a user certificate from Tether's CA authenticates; a cluster certificate does not", async (t) => {
  const { writeKubeconfig } = await import("../kube/index.js");
  const user = await tether.ca.issueUserCertificate("carol", ["admins"]);
  await tether.store.putCluster({
    ...(await tether.store.getCluster("member1"))!,
    allowedGroups: ["admins"],
  });
  const kubeconfig = await writeKubeconfig(join(tether.dir, "carol-cert"), {
    name: "member1",
    server: `${tether.server.url}/clusters/member1`,
    caPem: tether.ca.certPem,
    certPem: user.certPem,
    keyPem: user.keyPem!,
  });
  const whoami = await m1.kubectl(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"], {
    kubeconfig,
  });
  t.equal(whoami.code, 0, whoami.stderr);
  t.equal(whoami.stdout, "tether:carol");
  const agentCert = await tether.ca.issueClusterCertificate("member1");
  const asAgent = await writeKubeconfig(join(tether.dir, "agent-as-user"), {
    name: "member1",
    server: `${tether.server.url}/clusters/member1`,
    caPem: tether.ca.certPem,
    certPem: agentCert.certPem,
    keyPem: agentCert.keyPem!,
  });
  const refused = await m1.kubectl(["get", "--raw", "/api"], { kubeconfig: asAgent });
  t.not(refused.code, 0);
  t.match(refused.stderr, /could not authenticate/);
});
