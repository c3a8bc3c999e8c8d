// Host routing's name rules: <label>.<domain> names a member (Host with a
// port, a trailing dot, any case), nothing else does; SNI before Host, and
// two members named is a conflict; the printed kubeconfig and KubeFed forms.
import type { IncomingMessage } from "node:http";
import t from "tap";
import {
  hostRoute,
  kubeconfigServer,
  memberOfHost,
  memberUrl,
  normalizeClusterDomain,
  toClusterPath,
} from "../../src/proxy/host-routing.js";

const D = "clusters.example.com";

t.test("which host names are members", async (t) => {
  t.equal(memberOfHost("m1.clusters.example.com", D), "m1");
  t.equal(memberOfHost("M1.Clusters.Example.COM:8443", D), "m1", "case and port");
  t.equal(memberOfHost("m1.clusters.example.com.", D), "m1", "a trailing dot");
  t.equal(memberOfHost("a.m1.clusters.example.com", D), undefined, "two labels");
  t.equal(memberOfHost("clusters.example.com", D), undefined, "the domain itself");
  t.equal(memberOfHost("m1.xclusters.example.com", D), undefined, "a longer label is not the domain");
  t.equal(memberOfHost("-bad.clusters.example.com", D), undefined, "not a DNS label");
  t.equal(memberOfHost("m1.clusters.example.org", D), undefined);
  t.equal(memberOfHost("127.0.0.1:8443", D), undefined);
  t.equal(memberOfHost("[::1]:8443", D), undefined);
  t.equal(memberOfHost(undefined, D), undefined);
  t.equal(normalizeClusterDomain(".Clusters.Example.com."), "clusters.example.com");
  t.equal(normalizeClusterDomain("localhost"), undefined, "one label is not a domain");
  t.equal(normalizeClusterDomain("a b.com"), undefined);
  t.equal(normalizeClusterDomain("*.example.com"), undefined, "the wildcard is added by the server");
});

const req = (servername: string | undefined, host: string | undefined, url = "/api") =>
  ({
    socket: { servername },
    headers: host === undefined ? {} : { host },
    url,
  }) as unknown as IncomingMessage;

t.test("SNI first, then Host, a conflict refused", async (t) => {
  t.same(hostRoute(req("m1.clusters.example.com", "127.0.0.1:8443"), D), { kind: "cluster", cluster: "m1" });
  t.same(hostRoute(req(undefined, "m2.clusters.example.com"), D), { kind: "cluster", cluster: "m2" });
  t.same(hostRoute(req("tether.example.com", "m2.clusters.example.com"), D), {
    kind: "cluster",
    cluster: "m2",
  });
  t.same(hostRoute(req("m1.clusters.example.com", "m1.clusters.example.com:8443"), D), {
    kind: "cluster",
    cluster: "m1",
  });
  t.equal(hostRoute(req("m1.clusters.example.com", "m2.clusters.example.com"), D).kind, "misdirected");
  t.same(hostRoute(req(undefined, "tether.example.com"), D), { kind: "none" });
  t.same(
    hostRoute(req("m1.clusters.example.com", "x"), undefined),
    { kind: "none" },
    "no domain: no host routing",
  );
});

t.test("HTTP/2: :authority stands for Host", async (t) => {
  const h2 = (servername: string | undefined, authority: string) =>
    ({
      socket: { servername },
      headers: { ":authority": authority },
      url: "/api",
    }) as unknown as IncomingMessage;
  t.same(hostRoute(h2(undefined, "m2.clusters.example.com:8443"), D), { kind: "cluster", cluster: "m2" });
  t.equal(hostRoute(h2("m1.clusters.example.com", "m2.clusters.example.com"), D).kind, "misdirected");
});

t.test("the path form the cluster proxy reads", async (t) => {
  const r = req(undefined, undefined, "/api/v1/pods?watch=1");
  t.ok(toClusterPath(r, "m1"));
  t.equal(r.url, "/clusters/m1/api/v1/pods?watch=1");
  t.notOk(toClusterPath(req(undefined, undefined, "http://evil/api"), "m1"), "absolute form");
  t.notOk(toClusterPath(req(undefined, undefined, "*"), "m1"), "asterisk form");
});

t.test("printed forms", async (t) => {
  t.same(kubeconfigServer("https://tether.example.com:8443/", "m1"), {
    server: "https://tether.example.com:8443/clusters/m1",
  });
  t.same(kubeconfigServer("https://tether.example.com:8443", "m1", D), {
    server: "https://tether.example.com:8443",
    "tls-server-name": "m1.clusters.example.com",
  });
  t.equal(memberUrl("https://tether.example.com:8443", "m1"), "https://tether.example.com:8443/clusters/m1");
  t.equal(memberUrl("https://tether.example.com:8443", "m1", D), "https://m1.clusters.example.com:8443");
  t.equal(memberUrl("https://10.0.0.5", "m1", D), "https://m1.clusters.example.com");
});
