// FileStore and KubeStore (on a real harness apiserver) answer the same bad
// input the same way: the same error code, or the same quiet result. Callers
// (the admin API, the CLI, renewal) branch on codes, so a store must not
// decide what a mistake is called.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FileStore, hashToken, issueToken, KubeStore, type Store } from "@tether/server";
import t from "tap";
import { startClusters } from "../kube/index.js";

const root = new URL("../../", import.meta.url).pathname;
const FAR = "2999-01-01T00:00:00.000Z";
const cluster = (name: string) => ({
  name,
  auth: "impersonate" as const,
  labels: {},
  allowedUsers: [],
  allowedGroups: [],
  createdAt: "2026-01-01T00:00:00.000Z",
});

/** The code a call fails with, or the value it resolves to, as text to compare. */
async function outcome(call: () => Promise<unknown>): Promise<string> {
  try {
    return `resolves ${JSON.stringify(await call())}`;
  } catch (err) {
    return `throws ${(err as { code?: string }).code ?? (err as Error).message}`;
  }
}

t.test("FileStore and KubeStore give the same code for the same bad input", async (t) => {
  const set = await startClusters(1, { names: ["host"] });
  t.teardown(() => set.stop());
  const host = set.clusters[0]!;
  const crd = await host.kubectl(["apply", "-k", join(root, "deploy/crd")]);
  t.equal(crd.code, 0, crd.stderr);
  await host.kubectl(["wait", "--for", "condition=established", "crd/clusters.tether.io", "--timeout=30s"]);
  await host.api("POST", "/api/v1/namespaces", { metadata: { name: "tether-system" } }, [409]);

  const dir = await mkdtemp(join(tmpdir(), "tether-store-codes-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const stores: [string, Store][] = [
    ["file", await FileStore.open(join(dir, "state"))],
    ["kubernetes", await KubeStore.open({ kubeconfig: host.kubeconfig })],
  ];
  t.teardown(() => (stores[1]![1] as KubeStore).close());

  const taken = issueToken().hash;
  const cases: [string, (s: Store) => Promise<unknown>][] = [
    ["addCluster with a bad name", (s) => s.addCluster(cluster("Bad_Name"))],
    ["putCluster with a bad name", (s) => s.putCluster(cluster("Bad_Name"))],
    [
      "addCluster with a bad auth mode",
      (s) => s.addCluster({ ...cluster("ok"), auth: "none" as "impersonate" }),
    ],
    ["getCluster of a bad name", (s) => s.getCluster("Bad_Name")],
    ["deleteCluster of a bad name", (s) => s.deleteCluster("Bad_Name")],
    ["addToken with a bad hash", (s) => s.addToken({ hash: "sha256:nope", kind: "admin", expiresAt: FAR })],
    [
      "addToken for a bad cluster",
      (s) => s.addToken({ hash: issueToken().hash, kind: "join", cluster: "Bad_Name", expiresAt: FAR }),
    ],
    ["addToken with a hash already taken", (s) => s.addToken({ hash: taken, kind: "admin", expiresAt: FAR })],
    ["consumeJoinToken for a bad cluster", (s) => s.consumeJoinToken(hashToken("tether_x"), "Bad_Name")],
    ["deleteToken of a bad hash", (s) => s.deleteToken("sha256:nope")],
    ["recordIssued with a bad serial", (s) => s.recordIssued("not-hex", "ok", FAR)],
    ["recordIssued for a bad cluster name", (s) => s.recordIssued("0a1b", "Bad_Name", FAR)],
    ["recordIssued with a bad date", (s) => s.recordIssued("0a1b", "ok", "soon")],
    ["revokeCluster of a bad name", (s) => s.revokeCluster("Bad_Name")],
    ["isRevoked of a bad serial", (s) => s.isRevoked("not-hex")],
  ];
  for (const [, store] of stores) await store.addToken({ hash: taken, kind: "admin", expiresAt: FAR });
  for (const [what, call] of cases) {
    const [file, kube] = [await outcome(() => call(stores[0]![1])), await outcome(() => call(stores[1]![1]))];
    t.equal(kube, file, `${what}: ${file}`);
  }
});
