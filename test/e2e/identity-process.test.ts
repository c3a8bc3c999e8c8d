// Issue 16: the identity flags of a real `tether-server serve` process wire
// the sources in: a host service-account token (TokenReview through
// --host-kubeconfig) and an ID token of --oidc-issuer-url (trusted through
// --oidc-ca-file, prefixed by --oidc-username-prefix) are authenticated and
// admitted to a cluster that lists them (503: no agent, which is checked only
// after admission), others are 403 or 401.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FileStore, runCliCaptured } from "@tether/server";
import t from "tap";
import { startClusters } from "../kube/index.js";
import { tokenFor } from "./fixture.js";
import { TestIssuer } from "./oidc-issuer.js";
import { rawRequest } from "./raw-client.js";
import { spawnServer } from "./tether-processes.js";

const set = await startClusters(1);
t.teardown(() => set.stop());
const host = set.clusters[0]!;
await host.api("POST", "/api/v1/namespaces/default/serviceaccounts", { metadata: { name: "ctl" } }, [409]);
await host.api("POST", "/api/v1/namespaces/default/serviceaccounts", { metadata: { name: "nope" } }, [409]);
const issuer = await TestIssuer.start();
t.teardown(() => issuer.close());
await issuer.addKey("k1");
issuer.publish("k1");

const dir = await mkdtemp(join(tmpdir(), "tether-identity-"));
const stateDir = join(dir, "state");
const caPem = (await (await FileStore.open(stateDir)).loadOrCreateCa()).certPem;
const issuerCa = join(dir, "issuer-ca.pem");
await writeFile(issuerCa, issuer.caPem);
const added = await runCliCaptured([
  "cluster",
  "add",
  "m",
  "--state-dir",
  stateDir,
  "--server",
  "https://127.0.0.1:1",
  "--allow-user",
  "system:serviceaccount:default:ctl",
  "--allow-user",
  "oidc:alice",
]);
// A top-level assertion would let tap end the root test (and run the teardowns) at the next await.
if (added.code !== 0) throw new Error(`cluster add failed: ${added.stderr}`);
const { proc, url } = await spawnServer(stateDir, caPem, join(dir, "server.log"), undefined, [
  "--host-service-accounts",
  "--host-kubeconfig",
  host.kubeconfig,
  "--oidc-issuer-url",
  issuer.url,
  "--oidc-client-id",
  "tether",
  "--oidc-username-prefix",
  "oidc:",
  "--oidc-ca-file",
  issuerCa,
]);
t.teardown(async () => {
  await proc.stop();
  await rm(dir, { recursive: true, force: true });
});

const status = async (token: string) => {
  const res = await rawRequest({ url, caPem }, "/clusters/m/version", {
    headers: { authorization: `Bearer ${token}` },
  });
  return `${res.status} ${(JSON.parse(res.body) as { message: string }).message}`;
};

t.test("a host service account", async (t) => {
  t.match(await status(await tokenFor(host, "default", "ctl")), /^503 .*no connected Tether agent/);
  t.match(await status(await tokenFor(host, "default", "nope")), /^403 /);
  const [h, p] = (await tokenFor(host, "default", "ctl")).split(".");
  t.match(await status(`${h}.${p}.forged`), /^401 /);
});

t.test("an OIDC user", async (t) => {
  t.match(
    await status(await issuer.token("k1", { sub: "alice", aud: "tether" })),
    /^503 .*no connected Tether agent/,
  );
  t.match(await status(await issuer.token("k1", { sub: "bob", aud: "tether" })), /^403 .*"oidc:bob"/);
  t.match(await status(await issuer.token("k1", { sub: "alice", aud: "other" })), /^401 /);
});
