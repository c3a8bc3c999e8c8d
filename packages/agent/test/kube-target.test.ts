import { mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { inClusterTarget, kubeconfigTarget, serverVerification, TokenFile } from "../src/kube-target.js";

const dir = await mkdtemp(join(tmpdir(), "tether-agent-target-"));
t.teardown(() => rm(dir, { recursive: true, force: true }));

t.test("in-cluster: host and port from the environment, CA and token from files", async (t) => {
  await writeFile(join(dir, "ca.crt"), "CA PEM");
  await writeFile(join(dir, "token"), "token-one\n");
  const target = inClusterTarget(
    { KUBERNETES_SERVICE_HOST: "10.0.0.1", KUBERNETES_SERVICE_PORT: "443" },
    dir,
  );
  t.equal(target.url.toString(), "https://10.0.0.1/");
  t.equal(target.tls.ca, "CA PEM");
  t.equal(target.authorization(), "Bearer token-one");
  const v6 = inClusterTarget({ KUBERNETES_SERVICE_HOST: "fd00::1", KUBERNETES_SERVICE_PORT: "6443" }, dir);
  t.equal(v6.url.host, "[fd00::1]:6443");
});

t.test("outside a pod the error says what to do", async (t) => {
  t.throws(() => inClusterTarget({}, dir), { code: "ERR_TETHER_KUBE_TARGET", message: /--kubeconfig/ });
  t.throws(
    () => inClusterTarget({ KUBERNETES_SERVICE_HOST: "h", KUBERNETES_SERVICE_PORT: "1" }, "/nonexistent"),
    {
      code: "ERR_TETHER_KUBE_TARGET",
      message: /service-account CA at \/nonexistent\/ca.crt/,
    },
  );
});

t.test("a rotated token file is picked up", async (t) => {
  const path = join(dir, "rotating");
  await writeFile(path, "first");
  const tf = new TokenFile(path);
  t.equal(tf.current(), "first");
  // Projected volumes swap the file atomically.
  await writeFile(`${path}.new`, "second-token");
  await rename(`${path}.new`, path);
  (tf as unknown as { checkedAt: number }).checkedAt = 0;
  t.equal(tf.current(), "second-token");
  await rm(path);
  (tf as unknown as { checkedAt: number }).checkedAt = 0;
  t.equal(tf.current(), "second-token", "a briefly missing file keeps the last good token");
});

t.test("kubeconfig: current context, embedded data, relative files", async (t) => {
  await writeFile(join(dir, "client.crt"), "CERT");
  const path = join(dir, "kubeconfig");
  await writeFile(
    path,
    [
      "apiVersion: v1",
      "kind: Config",
      "current-context: b",
      "contexts:",
      "- {name: a, context: {cluster: ca, user: ua}}",
      "- {name: b, context: {cluster: cb, user: ub}}",
      "clusters:",
      "- {name: ca, cluster: {server: 'https://a:1'}}",
      `- {name: cb, cluster: {server: 'https://b:2', certificate-authority-data: ${Buffer.from("CA-B").toString("base64")}}}`,
      "users:",
      "- {name: ua, user: {token: ta}}",
      `- {name: ub, user: {client-certificate: client.crt, client-key-data: ${Buffer.from("KEY").toString("base64")}}}`,
    ].join("\n"),
  );
  const b = kubeconfigTarget(path);
  t.equal(b.url.host, "b:2");
  t.same(b.tls, { ca: "CA-B", cert: "CERT", key: "KEY" });
  t.same(serverVerification(b.tls), { ca: "CA-B" }, "passthrough keeps the CA, not the client certificate");
  t.same(serverVerification({ servername: "s", cert: "C", key: "K" }), { servername: "s" });
  t.equal(b.authorization(), undefined);
  const a = kubeconfigTarget(path, "a");
  t.equal(a.authorization(), "Bearer ta");
  t.throws(() => kubeconfigTarget(path, "missing"), { message: /no context "missing"/ });
});
