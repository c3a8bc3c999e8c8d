// `tether-server kubefed NAME` on a temporary state dir: the KubeFedCluster
// points at /clusters/NAME with Tether's CA, and its Secret holds a user token
// that the store knows, scoped to that cluster, expiring when it says.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { parseAllDocuments } from "yaml";
import { runCliCaptured } from "../../src/cli/cli.js";
import { hashToken } from "../../src/pki/tokens.js";
import { FileStore } from "../../src/store/file-store.js";

const cli = (...args: string[]) => runCliCaptured(args);

const SERVER = "https://tether.example.com:8443";

t.test("kubefed prints a KubeFedCluster and its token Secret", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "tether-kubefed-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const base = ["--state-dir", dir, "--server", SERVER];
  t.equal((await cli("cluster", "add", "east", ...base)).code, 0);
  const r = await cli("kubefed", "east", "--group", "federation", "--ttl", "30d", ...base);
  t.equal(r.code, 0, r.stderr);
  const [secret, cluster] = parseAllDocuments(r.stdout).map((d) => d.toJS()) as [
    { kind: string; type: string; metadata: { name: string; namespace: string }; data: { token: string } },
    {
      apiVersion: string;
      kind: string;
      metadata: { name: string; namespace: string };
      spec: { apiEndpoint: string; caBundle: string; secretRef: { name: string } };
    },
  ];
  t.equal(cluster.apiVersion, "core.kubefed.io/v1beta1");
  t.equal(cluster.kind, "KubeFedCluster");
  t.equal(cluster.metadata.name, "east");
  t.equal(cluster.metadata.namespace, "kube-federation-system");
  t.equal(cluster.spec.apiEndpoint, `${SERVER}/clusters/east`);
  const store = await FileStore.open(dir);
  const ca = await store.loadOrCreateCa();
  t.equal(
    Buffer.from(cluster.spec.caBundle, "base64").toString("utf8"),
    ca.certPem,
    "caBundle is Tether's CA",
  );
  t.equal(secret.kind, "Secret");
  t.equal(cluster.spec.secretRef.name, secret.metadata.name, "the cluster names its Secret");
  t.equal(secret.metadata.namespace, cluster.metadata.namespace);
  t.equal(secret.type, "Opaque");
  const token = Buffer.from(secret.data.token, "base64").toString("utf8");
  const record = await store.findToken(hashToken(token));
  t.match(record, { kind: "user", user: "kubefed", groups: ["federation"], clusters: ["east"] });
  const days = (Date.parse(record!.expiresAt) - Date.now()) / 86_400_000;
  t.ok(days > 29.9 && days <= 30, `expires in --ttl (${days.toFixed(2)} days)`);

  const json = await cli("kubefed", "east", "-o", "json", "--kubefed-namespace", "fed", ...base);
  t.match(JSON.parse(json.stdout), {
    kind: "List",
    items: [{ kind: "Secret", metadata: { namespace: "fed" } }, { kind: "KubeFedCluster" }],
  });
  const unknown = await cli("kubefed", "west", ...base);
  t.equal(unknown.code, 1);
  t.match(unknown.stderr, /no cluster named west/);
  const bad = await cli("kubefed", "east", "--group", "system:masters", ...base);
  t.match(bad.stderr, /reserved/);
});

t.test("the token lives 90 days unless --ttl says otherwise, and never more than a year", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "tether-kubefed-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const base = ["--state-dir", dir, "--server", SERVER];
  t.equal((await cli("cluster", "add", "east", ...base)).code, 0);
  const store = await FileStore.open(dir);
  const expiryOf = async (stdout: string) => {
    const secret = parseAllDocuments(stdout)[0]!.toJS() as { data: { token: string } };
    const record = await store.findToken(
      hashToken(Buffer.from(secret.data.token, "base64").toString("utf8")),
    );
    return (Date.parse(record!.expiresAt) - Date.now()) / 86_400_000;
  };
  const r = await cli("kubefed", "east", ...base);
  t.equal(r.code, 0, r.stderr);
  const days = await expiryOf(r.stdout);
  t.ok(days > 89.9 && days <= 90, `default: 90 days (${days.toFixed(2)})`);
  t.match(r.stdout, /expires \d{4}-\d\d-\d\dT/, "the YAML says when it expires");
  t.match(r.stdout, /run "tether-server kubefed east" again and re-apply before then/);

  const userTokens = async () => (await store.listTokens()).filter((r) => r.kind === "user").length;
  const before = await userTokens();
  const tooLong = await cli("kubefed", "east", "--ttl", "366d", ...base);
  t.equal(tooLong.code, 1);
  t.match(tooLong.stderr, /--ttl/);
  t.equal(await userTokens(), before, "a refused --ttl issues no token");
});
