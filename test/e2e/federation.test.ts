// Issue 6: what `tether-server kubefed NAME` prints works for KubeFed
// unchanged. A harness cluster plays KubeFed's host: it gets KubeFed's own
// KubeFedCluster CRD (from the sigs.k8s.io/kubefed module, fetched through the
// Go module proxy and checked against sum.golang.org by `go mod download`),
// the printed objects are applied there with kubectl as the docs say, and
// KubeFed's member client is built from the stored objects exactly as its
// controller does (apiEndpoint, caBundle, the Secret's data.token: nothing
// else). That client lists a real member's namespaces through a running
// Tether. (KubeFed's controller itself is not run: it is retired upstream.)
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { runCliCaptured } from "@tether/server";
import t from "tap";
import { parseAllDocuments } from "yaml";
import { startClusters, writeKubeconfig } from "../kube/index.js";
import { bindTetherAdmins, startTether, until } from "./fixture.js";

/** KubeFed's last release; its chart carries the CRDs kubefedctl's host cluster has. */
const KUBEFED_MODULE = "sigs.k8s.io/kubefed@v0.10.0";
const CRD_FILE = "charts/kubefed/charts/controllermanager/crds/crds.yaml";
const CRD_NAME = "kubefedclusters.core.kubefed.io";
const NAMESPACE = "kube-federation-system";

async function kubefedClusterCrd(): Promise<Record<string, unknown>> {
  let dir: string;
  try {
    const { stdout } = await promisify(execFile)("go", ["mod", "download", "-json", KUBEFED_MODULE], {
      cwd: tmpdir(),
      timeout: 300_000,
    });
    dir = (JSON.parse(stdout) as { Dir: string }).Dir;
  } catch (err) {
    throw new Error(
      `cannot fetch ${KUBEFED_MODULE} with "go mod download" (Go and the module proxy, as the harness build needs): ${(err as Error).message}`,
    );
  }
  const crd = parseAllDocuments(await readFile(join(dir, CRD_FILE), "utf8"))
    .map((d) => d.toJS() as { metadata?: { name?: string } } | null)
    .find((d) => d?.metadata?.name === CRD_NAME);
  if (!crd) throw new Error(`${KUBEFED_MODULE} has no ${CRD_NAME} in ${CRD_FILE}`);
  return crd as Record<string, unknown>;
}

interface StoredKubeFedCluster {
  spec: { apiEndpoint: string; caBundle: string; secretRef: { name: string } };
}

t.test("a KubeFedCluster from tether-server kubefed reaches the member", async (t) => {
  const [set, crd] = await Promise.all([startClusters(1), kubefedClusterCrd()]);
  t.teardown(() => set.stop());
  const cluster = set.clusters[0]!;
  const tether = await startTether();
  t.teardown(() => tether.stop());
  await tether.registerCluster("fed1");
  await tether.startAgent("fed1", cluster);
  await bindTetherAdmins(cluster);

  // The harness cluster is both KubeFed's host (CRD, objects) and the member behind Tether.
  await cluster.api("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd);
  await cluster.api("POST", "/api/v1/namespaces", { metadata: { name: NAMESPACE } });
  await until("the KubeFedCluster CRD is served", async () => {
    // Fresh CRD storage answers 404, then 429 while it initializes.
    const path = `/apis/core.kubefed.io/v1beta1/namespaces/${NAMESPACE}/kubefedclusters`;
    return (await cluster.api("GET", path, undefined, [404, 429])).status === 200;
  });

  const printed = await runCliCaptured([
    "kubefed",
    "fed1",
    "--group",
    "admins",
    "--state-dir",
    tether.store.dir,
    "--server",
    tether.server.url,
  ]);
  t.equal(printed.code, 0, printed.stderr);

  await t.test("KubeFed's CRD accepts the objects as printed", async (t) => {
    const applied = await cluster.kubectl(["apply", "--validate=strict", "-f", "-"], {
      input: printed.stdout,
    });
    t.equal(applied.code, 0, applied.stderr);
    t.match(applied.stdout, /kubefedcluster.core.kubefed.io\/fed1 created/);

    // The same check refuses what KubeFed could not use, so passing it means something.
    const [, kfc] = parseAllDocuments(printed.stdout).map((d) => d.toJS()) as [unknown, StoredKubeFedCluster];
    const broken: [object, RegExp][] = [
      [{ ...kfc, spec: { ...kfc.spec, caBundle: "not base64!" } }, /spec.caBundle .*must be of type byte/],
      [
        { ...kfc, spec: { ...kfc.spec, apiEndpont: kfc.spec.apiEndpoint } },
        /unknown field "spec.apiEndpont"/,
      ],
      [
        { ...kfc, spec: { caBundle: kfc.spec.caBundle, secretRef: kfc.spec.secretRef } },
        /spec.apiEndpoint: Required/,
      ],
    ];
    for (const [object, reason] of broken) {
      const res = await cluster.kubectl(["apply", "--dry-run=server", "--validate=strict", "-f", "-"], {
        input: JSON.stringify(object),
      });
      t.not(res.code, 0);
      t.match(res.stderr, reason, `refused: ${reason.source}`);
    }
  });

  await t.test("KubeFed's client config, built from the stored objects, works through Tether", async (t) => {
    const stored = await cluster.api<StoredKubeFedCluster>(
      "GET",
      `/apis/core.kubefed.io/v1beta1/namespaces/${NAMESPACE}/kubefedclusters/fed1`,
    );
    const { apiEndpoint, caBundle, secretRef } = stored.body.spec;
    const secret = await cluster.api<{ data: { token: string } }>(
      "GET",
      `/api/v1/namespaces/${NAMESPACE}/secrets/${secretRef.name}`,
    );
    t.equal(apiEndpoint, `${tether.server.url}/clusters/fed1`);
    const kubeconfig = await writeKubeconfig(join(tether.dir, "kubefed.kubeconfig"), {
      name: "fed1",
      server: apiEndpoint,
      caPem: Buffer.from(caBundle, "base64").toString("utf8"),
      token: Buffer.from(secret.body.data.token, "base64").toString("utf8"),
    });
    const res = await cluster.kubectl(["get", "namespaces", "-o", "name"], { kubeconfig });
    t.equal(res.code, 0, res.stderr);
    t.match(
      res.stdout,
      /namespace\/kube-federation-system/,
      "KubeFed's client lists the member's namespaces",
    );
    const who = await cluster.kubectl(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"], {
      kubeconfig,
    });
    t.equal(who.stdout, "tether:kubefed", "the member sees KubeFed as tether:kubefed");
  });
});
