// Issues 16 + 14: identities other than Tether's own across the replica hop.
// Three replicas on the Kubernetes store with --host-service-accounts: a host
// service account's token reaches a member through every replica (the two
// that do not hold its tunnel forward the identity they authenticated; the
// owner takes it from the hop and never asks the host again), and a caller's
// repeated --as-group arrives at the member as separate groups, not as one
// "a, b" that Node's header parsing would make of them.
import t from "tap";
import { tokenFor } from "./fixture.js";
import { rawRequest } from "./raw-client.js";
import { startFleet } from "./replica-fleet.js";

const NS = "fed";
const SA_USER = `system:serviceaccount:${NS}:controller`;

t.test("identities across the hop", async (t) => {
  const fleet = await startFleet(t, {
    serverArgs: ["--host-service-accounts"],
    clusterAddArgs: ["--allow-group", "admins", "--allow-user", SA_USER],
  });
  const { host, m1, replicas, ca, holderOf, kubeconfigVia } = fleet;
  await host.api("POST", "/api/v1/namespaces", { metadata: { name: NS } }, [409]);
  await host.api(
    "POST",
    `/api/v1/namespaces/${NS}/serviceaccounts`,
    { metadata: { name: "controller" } },
    [409],
  );
  await m1.api(
    "POST",
    "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    {
      metadata: { name: "tether-fed-view" },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "view" },
      subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "User", name: `tether:${SA_USER}` }],
    },
    [409],
  );
  const token = await tokenFor(host, NS, "controller");
  const owner = await holderOf("m1");

  await t.test("a host service-account token through every replica", async (t) => {
    for (const r of replicas) {
      const res = await rawRequest({ url: r.url, caPem: ca.certPem }, "/clusters/m1/api/v1/namespaces", {
        headers: { authorization: `Bearer ${token}` },
      });
      t.equal(
        res.status,
        200,
        `through ${r.id}${r.id === owner ? " (the owner)" : " (one hop)"}${res.status === 200 ? "" : `: ${res.body}`}`,
      );
    }
  });

  await t.test("repeated --as-group across the hop stay separate groups", async (t) => {
    const r = replicas.find((x) => x.id !== owner)!;
    const who = await m1.kubectl(
      ["auth", "whoami", "-o", "json", "--as", "bob", "--as-group", "ga", "--as-group", "gb"],
      { kubeconfig: await kubeconfigVia("m1", r) },
    );
    t.equal(who.code, 0, who.stderr);
    const groups = (JSON.parse(who.stdout) as { status: { userInfo: { groups: string[] } } }).status.userInfo
      .groups;
    t.ok(groups.some((g) => /(^|:)ga$/.test(g)) && groups.some((g) => /(^|:)gb$/.test(g)), groups.join("|"));
    t.notOk(
      groups.some((g) => g.includes(",")),
      "no group joined with a comma",
    );
  });
});
