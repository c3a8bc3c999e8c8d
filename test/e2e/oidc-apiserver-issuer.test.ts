// Issue 16: OIDC against a real issuer, a harness kube-apiserver's own
// service-account issuer (--service-account-issuer=its URL): Tether discovers
// it through /.well-known/openid-configuration, fetches /openid/v1/jwks and
// accepts a TokenRequest token minted for Tether's client id; one for the
// apiserver's own audience is refused. The same apiserver is the member.
import t from "tap";
import { OidcVerifier } from "@tether/server";
import { startClusters } from "../kube/index.js";
import { startTether } from "./fixture.js";
import { rawRequest } from "./raw-client.js";

const CLIENT = "tether";
const set = await startClusters(1, { selfIssuer: true });
t.teardown(() => set.stop());
const apiserver = set.clusters[0]!;
const issuer = apiserver.server;
// Discovery and JWKS are anonymous reads, as an OIDC client makes them.
await apiserver.api("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
  metadata: { name: "oidc-discovery-anonymous" },
  roleRef: {
    apiGroup: "rbac.authorization.k8s.io",
    kind: "ClusterRole",
    name: "system:service-account-issuer-discovery",
  },
  subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "Group", name: "system:unauthenticated" }],
});
await apiserver.api("POST", "/api/v1/namespaces", { metadata: { name: "people" } });
await apiserver.api("POST", "/api/v1/namespaces/people/serviceaccounts", { metadata: { name: "alice" } });

const tether = await startTether({
  identity: { oidc: new OidcVerifier({ issuerUrl: issuer, clientId: CLIENT, caPem: apiserver.caPem }) },
});
t.teardown(() => tether.stop());
const ALICE = `${issuer}#system:serviceaccount:people:alice`;
await tether.registerCluster("m", "impersonate", { users: [ALICE] });
await tether.startAgent("m", apiserver);

const tokenFor = async (audiences?: string[]) =>
  (
    await apiserver.api<{ status: { token: string } }>(
      "POST",
      "/api/v1/namespaces/people/serviceaccounts/alice/token",
      {
        apiVersion: "authentication.k8s.io/v1",
        kind: "TokenRequest",
        spec: { expirationSeconds: 600, ...(audiences ? { audiences } : {}) },
      },
    )
  ).body.status.token;

t.test("a TokenRequest token for Tether's client id authenticates, prefixed with the issuer", async (t) => {
  const who = await apiserver.kubectl(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"], {
    kubeconfig: await tether.rawKubeconfig("m", await tokenFor([CLIENT])),
  });
  t.equal(who.code, 0, who.stderr);
  t.equal(who.stdout, `tether:${ALICE}`);
});

t.test("one for another audience (the apiserver's own) is refused", async (t) => {
  const res = await rawRequest({ url: tether.server.url, caPem: tether.ca.certPem }, "/clusters/m/version", {
    headers: { authorization: `Bearer ${await tokenFor()}` },
  });
  t.equal(res.status, 401, res.body);
});
