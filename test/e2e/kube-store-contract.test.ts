// The Store contract (packages/server/test/store/store-contract.ts) on
// KubeStore, against a real host cluster from the harness with Tether's CRD
// applied: the same calls as on FileStore, the same answers and error codes.
import { join } from "node:path";
import { KubeStore } from "@tether/server";
import t from "tap";
import { storeContract } from "../../packages/server/test/store/store-contract.js";
import { startClusters } from "../kube/index.js";

const root = new URL("../../", import.meta.url).pathname;

t.test("the Store contract on KubeStore", async (t) => {
  const set = await startClusters(1, { names: ["host"] });
  t.teardown(() => set.stop());
  const host = set.clusters[0]!;
  const crd = await host.kubectl(["apply", "-k", join(root, "deploy/crd")]);
  t.equal(crd.code, 0, crd.stderr);
  await host.kubectl(["wait", "--for", "condition=established", "crd/clusters.tether.io", "--timeout=30s"]);
  await host.api("POST", "/api/v1/namespaces", { metadata: { name: "tether-contract" } }, [409]);
  const store = await KubeStore.open({ kubeconfig: host.kubeconfig, namespace: "tether-contract" });
  t.teardown(() => store.close());
  await storeContract(t, async () => store);
});
