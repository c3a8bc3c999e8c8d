// `kubefed NAME --auth service-account`, from the store and through a running
// server's admin API: a service-account-token Secret of KubeFed's own service
// account (no Tether token issued), the KubeFedCluster pointing at it, and a
// warning while the cluster does not allow that service account.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t, { type Test } from "tap";
import { ensureAdminCredential } from "../../src/admin/admin-credential.js";
import { runCliCaptured } from "../../src/cli/cli.js";
import { createLogger } from "../../src/logger.js";
import { TetherServer } from "../../src/server.js";
import { FileStore } from "../../src/store/file-store.js";
import { ADMIN_CREDENTIAL_FILE } from "../../src/store/state-store.js";

const cli = (...args: string[]) => runCliCaptured(args);
const SA_USER = "system:serviceaccount:kube-federation-system:kubefed-controller";

interface Printed {
  items: [
    { type: string; metadata: { name: string; annotations: Record<string, string> }; data?: unknown },
    { spec: { apiEndpoint: string; caBundle: string; secretRef: { name: string } } },
  ];
}

async function check(t: Test, stdout: string, server: string, caPem: string, store: FileStore) {
  const [secret, kfc] = (JSON.parse(stdout) as Printed).items;
  t.equal(secret.type, "kubernetes.io/service-account-token");
  t.equal(secret.metadata.annotations["kubernetes.io/service-account.name"], "kubefed-controller");
  t.equal(secret.data, undefined, "no token in the Secret: the host's token controller fills it");
  t.equal(kfc.spec.secretRef.name, secret.metadata.name);
  t.equal(kfc.spec.apiEndpoint, `${server}/clusters/east`);
  t.equal(Buffer.from(kfc.spec.caBundle, "base64").toString("utf8"), caPem);
  t.equal((await store.listTokens()).filter((x) => x.kind === "user").length, 0, "no Tether token issued");
}

t.test("from the store", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "tether-kubefed-sa-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const SERVER = "https://tether.example.com:8443";
  const base = ["--state-dir", dir, "--server", SERVER];
  t.equal((await cli("cluster", "add", "east", "--allow-user", SA_USER, ...base)).code, 0);
  t.equal((await cli("cluster", "add", "west", ...base)).code, 0);
  const store = await FileStore.open(dir);
  const r = await cli("kubefed", "east", "--auth", "service-account", "-o", "json", ...base);
  t.equal(r.code, 0, r.stderr);
  await check(t, r.stdout, SERVER, (await store.loadOrCreateCa()).certPem, store);
  const yaml = await cli("kubefed", "west", "--auth", "service-account", ...base);
  t.match(yaml.stdout, `# Cluster west does not allow ${SA_USER} yet`);
  const missing = await cli("kubefed", "north", "--auth", "service-account", ...base);
  t.not(missing.code, 0);
  t.match(missing.stderr, /ERR_TETHER_UNKNOWN_CLUSTER/);
});

t.test("through a running server (--credential)", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "tether-kubefed-sa-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const store = await FileStore.open(join(dir, "state"));
  const server = await TetherServer.start({
    store,
    host: "127.0.0.1",
    port: 0,
    log: createLogger({ level: "silent" }),
  });
  t.teardown(() => server.close());
  await store.recordServerUrl(server.url);
  await ensureAdminCredential(store, server.url, server.ca.certPem);
  const remote = [
    "--credential",
    join(store.dir, ADMIN_CREDENTIAL_FILE),
    "--state-dir",
    join(dir, "elsewhere"),
  ];
  t.equal((await cli("cluster", "add", "east", "--allow-user", SA_USER, ...remote)).code, 0);
  const r = await cli("kubefed", "east", "--auth", "service-account", "-o", "json", ...remote);
  t.equal(r.code, 0, r.stderr);
  await check(t, r.stdout, server.url, server.ca.certPem, store);
  const missing = await cli("kubefed", "north", "--auth", "service-account", ...remote);
  t.match(missing.stderr, /ERR_TETHER_UNKNOWN_CLUSTER/);
});
