// Issue 6: what `tether-server kubefed NAME` prints works for KubeFed
// unchanged. KubeFed's controller builds its client for a member from the
// KubeFedCluster's apiEndpoint and caBundle and the `token` of the Secret it
// names; this test builds exactly that client config and lists namespaces of
// a real member through a running Tether. (KubeFed itself is not run: it is
// retired upstream and not part of the harness.)
import { join } from "node:path";
import { runCliCaptured } from "@tether/server";
import t from "tap";
import { parseAllDocuments } from "yaml";
import { startClusters, writeKubeconfig } from "../kube/index.js";
import { bindTetherAdmins, startTether } from "./fixture.js";

t.test("a KubeFedCluster from tether-server kubefed reaches the member", async (t) => {
  const set = await startClusters(1);
  t.teardown(() => set.stop());
  const member = set.clusters[0]!;
  const tether = await startTether();
  t.teardown(() => tether.stop());
  await tether.registerCluster("fed1");
  await tether.startAgent("fed1", member);
  await bindTetherAdmins(member);

  const r = await runCliCaptured([
    "kubefed",
    "fed1",
    "--group",
    "admins",
    "--state-dir",
    tether.store.dir,
    "--server",
    tether.server.url,
  ]);
  t.equal(r.code, 0, r.stderr);
  const out = r.stdout;
  const [secret, cluster] = parseAllDocuments(out).map((d) => d.toJS()) as [
    { stringData: { token: string } },
    { spec: { apiEndpoint: string; caBundle: string } },
  ];
  const kubeconfig = await writeKubeconfig(join(tether.dir, "kubefed.kubeconfig"), {
    name: "fed1",
    server: cluster.spec.apiEndpoint,
    caPem: Buffer.from(cluster.spec.caBundle, "base64").toString("utf8"),
    token: secret.stringData.token,
  });
  const res = await member.kubectl(["get", "namespaces", "-o", "name"], { kubeconfig });
  t.equal(res.code, 0, res.stderr);
  t.match(res.stdout, /namespace\/kube-system/, "KubeFed's client config lists the member's namespaces");
  const who = await member.kubectl(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"], {
    kubeconfig,
  });
  t.equal(who.stdout, "tether:kubefed", "the member sees KubeFed as tether:kubefed");
});
