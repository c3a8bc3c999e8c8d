// Issue 16: a host-cluster service account's own token (TokenRequest, as a
// projected volume holds it) is a Tether identity, judged by the host
// apiserver's TokenReview: it reaches the members that allow it as
// tether:system:serviceaccount:<ns>:<name>, and no other. A TokenReview that
// cannot be made (the host apiserver down, or Tether not allowed to review)
// is a 503 that says so, not a 401. One harness cluster is both the host and
// the member.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { KubeApi, runCliCaptured, TokenReviewer } from "@tether/server";
import t from "tap";
import { stringify as toYaml } from "yaml";
import { freePort, startClusters, writeKubeconfig } from "../kube/index.js";
import { startTether, tokenFor, until } from "./fixture.js";
import { heldRequest, rawRequest } from "./raw-client.js";

const set = await startClusters(1);
t.teardown(() => set.stop());
const host = set.clusters[0]!;
const NS = "fed";
const SA_USER = `system:serviceaccount:${NS}:controller`;

await host.api("POST", "/api/v1/namespaces", { metadata: { name: NS } }, [409]);
for (const name of ["controller", "other", "doomed", "watcher"]) {
  await host.api("POST", `/api/v1/namespaces/${NS}/serviceaccounts`, { metadata: { name } }, [409]);
}
// On the member, what the SA may do as Tether presents it: view, by its prefixed name.
await host.api(
  "POST",
  "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
  {
    metadata: { name: "tether-fed-view" },
    roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "view" },
    subjects: [
      { apiGroup: "rbac.authorization.k8s.io", kind: "Group", name: `tether:system:serviceaccounts:${NS}` },
    ],
  },
  [409],
);

const tether = await startTether({
  identity: {
    serviceAccounts: new TokenReviewer({
      api: new KubeApi({ kubeconfig: host.kubeconfig }),
      cacheTtlMs: 200,
    }),
  },
});
t.teardown(() => tether.stop());
await tether.registerCluster("allows-sa", "impersonate", { users: [SA_USER] });
await tether.registerCluster("allows-group", "impersonate", { groups: [`system:serviceaccounts:${NS}`] });
await tether.registerCluster("admins-only", "impersonate", { groups: ["admins"] });
await tether.registerCluster("lists-nobody");
for (const name of ["allows-sa", "allows-group", "admins-only", "lists-nobody"]) {
  await tether.startAgent(name, host);
}

const controllerToken = await tokenFor(host, NS, "controller");
const kubectl = async (cluster: string, token: string, args: string[]) =>
  host.kubectl(args, { kubeconfig: await tether.rawKubeconfig(cluster, token) });

t.test("the SA lists a member that allows it, as tether:system:serviceaccount:…", async (t) => {
  const list = await kubectl("allows-sa", controllerToken, ["get", "namespaces", "-o", "name"]);
  t.equal(list.code, 0, list.stderr);
  t.match(list.stdout, /namespace\/fed/);
  const who = await kubectl("allows-sa", controllerToken, ["auth", "whoami", "-o", "json"]);
  t.equal(who.code, 0, who.stderr);
  const info = (JSON.parse(who.stdout) as { status: { userInfo: { username: string; groups: string[] } } })
    .status.userInfo;
  t.equal(info.username, `tether:${SA_USER}`);
  t.ok(info.groups.includes(`tether:system:serviceaccounts:${NS}`), info.groups.join(","));
  const byGroup = await kubectl("allows-group", controllerToken, ["get", "namespaces", "-o", "name"]);
  t.equal(byGroup.code, 0, byGroup.stderr);
});

t.test("and is refused on members that do not list it, even one that lists nobody", async (t) => {
  for (const cluster of ["admins-only", "lists-nobody"]) {
    const refused = await kubectl(cluster, controllerToken, ["get", "--raw", "/api/v1/namespaces"]);
    t.not(refused.code, 0, cluster);
    t.match(refused.stderr, new RegExp(`Forbidden.*user "${SA_USER}" may not use cluster "${cluster}"`));
  }
  const other = await kubectl("allows-sa", await tokenFor(host, NS, "other"), [
    "get",
    "--raw",
    "/api/v1/namespaces",
  ]);
  t.not(other.code, 0);
  t.match(other.stderr, /may not use cluster "allows-sa"/);
});

t.test("a token the host apiserver does not accept is a 401", async (t) => {
  const [h, p, s] = controllerToken.split(".");
  const forged = `${h}.${p}.${s!.slice(0, -4)}AAAA`;
  const refused = await kubectl("allows-sa", forged, ["get", "--raw", "/api/v1/namespaces"]);
  t.not(refused.code, 0);
  t.match(refused.stderr, /must be logged in.*Tether could not authenticate you/);
});

t.test("a deleted service account's token stops working once the brief cache lapses", async (t) => {
  const token = await tokenFor(host, NS, "doomed");
  await tether.registerCluster("allows-doomed", "impersonate", {
    users: [`system:serviceaccount:${NS}:doomed`],
  });
  await tether.startAgent("allows-doomed", host);
  const kc = await tether.rawKubeconfig("allows-doomed", token);
  const before = await host.kubectl(["get", "--raw", "/version"], { kubeconfig: kc });
  t.equal(before.code, 0, before.stderr);
  await host.api("DELETE", `/api/v1/namespaces/${NS}/serviceaccounts/doomed`);
  await until("the deleted SA's token is refused", async () => {
    const r = await host.kubectl(["get", "--raw", "/version"], { kubeconfig: kc });
    return r.code !== 0 && /must be logged in/.test(r.stderr);
  });
});

t.test(
  "a watch held with a SA token ends once the SA is deleted (the held token is reviewed again)",
  async (t) => {
    const token = await tokenFor(host, NS, "watcher");
    const target = { url: tether.server.url, caPem: tether.ca.certPem };
    const watch = await heldRequest(
      target,
      `/clusters/allows-group/api/v1/namespaces/${NS}/serviceaccounts?watch=1&timeoutSeconds=120`,
      token,
    );
    t.teardown(() => watch.close());
    t.equal(watch.status, 200);
    await until("the watch shows the SA", () => watch.received().includes('"watcher"'));
    let closed = false;
    void watch.body.then(() => {
      closed = true;
    });
    // Longer than the reviewer's cache TTL (200 ms) and a sweep or two: a live SA's watch stays.
    await new Promise((r) => setTimeout(r, 1_500));
    t.notOk(closed, "open while the SA exists");
    const since = Date.now();
    await host.api("DELETE", `/api/v1/namespaces/${NS}/serviceaccounts/watcher`);
    // The host apiserver itself believes a reviewed token for up to 10 s (its token cache): ~10 s here.
    await until("the watch ends", () => closed, 25_000);
    t.comment(`the watch ended ${Date.now() - since} ms after the SA was deleted`);
    // The DELETED event may or may not have come first: what matters is the stream ended.
    const after = await rawRequest(target, "/clusters/allows-group/version", {
      headers: { authorization: `Bearer ${token}` },
    });
    t.equal(after.status, 401);
  },
);

t.test("a client config with a token file (a projected token, as client-go reloads it) works", async (t) => {
  const tokenFile = join(tether.dir, "projected-token");
  await writeFile(tokenFile, await tokenFor(host, NS, "controller"), { mode: 0o600 });
  const kc = join(tether.dir, "kc-token-file");
  await writeFile(
    kc,
    toYaml({
      apiVersion: "v1",
      kind: "Config",
      clusters: [
        {
          name: "m",
          cluster: {
            server: `${tether.server.url}/clusters/allows-sa`,
            "certificate-authority-data": Buffer.from(tether.ca.certPem).toString("base64"),
          },
        },
      ],
      users: [{ name: "m", user: { tokenFile } }],
      contexts: [{ name: "m", context: { cluster: "m", user: "m" } }],
      "current-context": "m",
    }),
  );
  const list = await host.kubectl(["get", "namespaces", "-o", "name"], { kubeconfig: kc });
  t.equal(list.code, 0, list.stderr);
  t.match(list.stdout, /namespace\/default/);
});

/** GET /clusters/allows-sa/version with `token` through a Tether whose TokenReviews go through `api`. */
async function throughReviewer(api: KubeApi, token: string) {
  const other = await startTether({ identity: { serviceAccounts: new TokenReviewer({ api }) } });
  try {
    await other.registerCluster("allows-sa", "impersonate", { users: [SA_USER] });
    await other.startAgent("allows-sa", host);
    return await rawRequest(
      { url: other.server.url, caPem: other.ca.certPem },
      "/clusters/allows-sa/version",
      {
        headers: { authorization: `Bearer ${token}` },
      },
    );
  } finally {
    await other.stop();
  }
}

t.test("no host apiserver to ask: 503 saying so, not 401", async (t) => {
  const dead = await writeKubeconfig(join(tether.dir, "kc-dead-host"), {
    name: "dead",
    server: `https://127.0.0.1:${await freePort()}`,
    caPem: host.caPem,
    certPem: host.admin.certPem,
    keyPem: host.admin.keyPem,
  });
  const res = await throughReviewer(new KubeApi({ kubeconfig: dead }), controllerToken);
  t.equal(res.status, 503, res.body);
  const status = JSON.parse(res.body) as { kind: string; reason: string; message: string };
  t.equal(status.kind, "Status");
  t.equal(status.reason, "ServiceUnavailable");
  t.match(status.message, /cannot verify service-account tokens now/);
});

t.test("Tether not allowed to create TokenReviews: 503 naming the missing RBAC", async (t) => {
  const unprivileged = await writeKubeconfig(join(tether.dir, "kc-unprivileged-host"), {
    name: "host",
    server: host.server,
    caPem: host.caPem,
    token: await tokenFor(host, NS, "other"),
  });
  const res = await throughReviewer(new KubeApi({ kubeconfig: unprivileged }), controllerToken);
  t.equal(res.status, 503, res.body);
  t.match((JSON.parse(res.body) as { message: string }).message, /create on tokenreviews/);
});

interface PrintedSecret {
  type: string;
  metadata: { name: string };
  data?: unknown;
}
interface StoredKubeFedCluster {
  spec: { apiEndpoint: string; caBundle: string };
}

t.test("kubefed --auth service-account: KubeFed's own SA token, filled in by the host, works", async (t) => {
  const kfNs = "kube-federation-system";
  const user = `system:serviceaccount:${kfNs}:kubefed-controller`;
  await host.api("POST", "/api/v1/namespaces", { metadata: { name: kfNs } }, [409]);
  await host.api(
    "POST",
    `/api/v1/namespaces/${kfNs}/serviceaccounts`,
    { metadata: { name: "kubefed-controller" } },
    [409],
  );
  await tether.registerCluster("fed-sa", "impersonate", { users: [user] });
  await tether.startAgent("fed-sa", host);
  await host.api(
    "POST",
    "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    {
      metadata: { name: "tether-kubefed-view" },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "view" },
      subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "User", name: `tether:${user}` }],
    },
    [409],
  );
  const printed = await runCliCaptured([
    "kubefed",
    "fed-sa",
    "--auth",
    "service-account",
    "-o",
    "json",
    "--state-dir",
    tether.store.dir,
    "--server",
    tether.server.url,
  ]);
  t.equal(printed.code, 0, printed.stderr);
  const [secret, kfc] = (JSON.parse(printed.stdout) as { items: [PrintedSecret, StoredKubeFedCluster] })
    .items;
  t.equal(secret.type, "kubernetes.io/service-account-token");
  t.notOk(secret.data, "no Tether token is printed");
  await host.api("POST", `/api/v1/namespaces/${kfNs}/secrets`, secret);
  let token = "";
  await until("the token controller fills the Secret", async () => {
    const got = await host.api<{ data?: { token?: string } }>(
      "GET",
      `/api/v1/namespaces/${kfNs}/secrets/${secret.metadata.name}`,
    );
    token = Buffer.from(got.body.data?.token ?? "", "base64").toString("utf8");
    return token !== "";
  });
  // KubeFed's member client: apiEndpoint, caBundle and the Secret's token, nothing else.
  const kubeconfig = await writeKubeconfig(join(tether.dir, "kc-kubefed-sa"), {
    name: "fed-sa",
    server: kfc.spec.apiEndpoint,
    caPem: Buffer.from(kfc.spec.caBundle, "base64").toString("utf8"),
    token,
  });
  const who = await host.kubectl(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"], {
    kubeconfig,
  });
  t.equal(who.stdout, `tether:${user}`, who.stderr);
  const list = await host.kubectl(["get", "namespaces", "-o", "name"], { kubeconfig });
  t.equal(list.code, 0, list.stderr);
  t.match(list.stdout, /namespace\/kube-federation-system/);
});

t.test(
  "refused service-account tokens count against the source's failure limit: then 429, no review",
  async (t) => {
    const limited = await startTether({
      limits: { authFailureLimit: 3, authFailureWindowMs: 3600_000 },
      identity: { serviceAccounts: new TokenReviewer({ api: new KubeApi({ kubeconfig: host.kubeconfig }) }) },
    });
    t.teardown(() => limited.stop());
    await limited.registerCluster("allows-sa", "impersonate", { users: [SA_USER] });
    const get = async (token: string) =>
      (
        await rawRequest(
          { url: limited.server.url, caPem: limited.ca.certPem },
          "/clusters/allows-sa/version",
          {
            headers: { authorization: `Bearer ${token}` },
          },
        )
      ).status;
    const [h, p] = controllerToken.split(".");
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push(await get(`${h}.${p}.forged${i}`));
    t.same(statuses, [401, 401, 401, 429]);
    t.equal(
      await get(controllerToken),
      429,
      "even a good token waits: the source is refused before any review",
    );
  },
);
