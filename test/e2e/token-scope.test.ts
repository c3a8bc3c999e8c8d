// Issue 10, item 8: a token from `kubeconfig m1` reaches only m1, even when
// m2's allowed groups include the user's group; a cluster's allowed users and
// groups narrow a token in scope and never widen one out of scope. kubectl
// against the real harness, two clusters served by agents.
import t from "tap";
import { startClusters } from "../kube/index.js";
import { bindTetherAdmins, startTether } from "./fixture.js";

const set = await startClusters(1);
t.teardown(() => set.stop());
const member = set.clusters[0]!;
await bindTetherAdmins(member);
const tether = await startTether();
t.teardown(() => tether.stop());
await tether.registerCluster("m1");
await tether.registerCluster("m2", "impersonate", { groups: ["admins"] });
await tether.startAgent("m1", member);
await tether.startAgent("m2", member);

const get = (kubeconfig: string) =>
  member.kubectl(["get", "--raw", "/api/v1/namespaces/default"], { kubeconfig });

t.test("a token scoped to m1 gets 403 on m2, which allows the user's group", async (t) => {
  const forM1 = await tether.userKubeconfig("m1", "alice", ["admins"]);
  const own = await get(forM1);
  t.equal(own.code, 0, own.stderr);
  // The same token, pointed at m2.
  const { readFile, writeFile } = await import("node:fs/promises");
  const elsewhere = `${forM1}-at-m2`;
  await writeFile(elsewhere, (await readFile(forM1, "utf8")).replace("/clusters/m1", "/clusters/m2"));
  const refused = await get(elsewhere);
  t.not(refused.code, 0);
  t.match(refused.stderr, /Error from server \(Forbidden\): user "alice" may not use cluster "m2"/);
});

t.test("on m2 itself, its allowed groups narrow who of the tokens in scope gets in", async (t) => {
  const admin = await get(await tether.userKubeconfig("m2", "alice", ["admins"]));
  t.equal(admin.code, 0, admin.stderr);
  const other = await get(await tether.userKubeconfig("m2", "bob", ["devs"]));
  t.not(other.code, 0, "in scope, but not in an allowed group");
  t.match(other.stderr, /may not use cluster "m2"/);
});
