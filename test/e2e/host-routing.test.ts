// Issue 17, part 2, must show: kubectl proxy WITHOUT --append-server-path on
// a host-routed kubeconfig serves GET and watch; on a path-form kubeconfig it
// gets a 404 that names --append-server-path. Routing reads the TLS server
// name first, then Host; when they name different members the request is
// refused with 421 (raw TLS, since kubectl cannot send such a pair).
import { readFile, writeFile } from "node:fs/promises";
import { connect as tlsConnect } from "node:tls";
import t from "tap";
import { startClusters } from "../kube/index.js";
import { bindTetherAdmins, startTether, TEST_CLUSTER_DOMAIN } from "./fixture.js";

const set = await startClusters(1);
t.teardown(() => set.stop());
const member = set.clusters[0]!;
const tether = await startTether({}, "host");
t.teardown(() => tether.stop());
await tether.registerCluster("member1");
await tether.registerCluster("other");
await tether.startAgent("member1", member);
await bindTetherAdmins(member);
const hostKc = await tether.userKubeconfig("member1", "alice", ["admins"]);
const token = (await readFile(hostKc, "utf8")).match(/token: (\S+)/)![1]!;

/** One raw request over TLS with `servername` as SNI (none for undefined); the whole answer. */
function raw(servername: string | undefined, head: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({
      host: "127.0.0.1",
      port: tether.server.port,
      ca: tether.ca.certPem,
      ...(servername ? { servername } : { checkServerIdentity: () => undefined }),
    });
    let text = "";
    // A liveness bound: a request that gets no complete answer fails instead of hanging the suite.
    s.setTimeout(15_000, () => s.destroy());
    s.on("secureConnect", () => s.write(head));
    s.on("data", (c: Buffer) => {
      text += c.toString("utf8");
    });
    s.on("error", reject);
    s.on("close", () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
      resolve({ status, body: text.slice(text.indexOf("\r\n\r\n") + 4) });
    });
  });
}

const get = (path: string, host: string, auth = "") =>
  `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${auth ? `Authorization: Bearer ${auth}\r\n` : ""}Connection: close\r\n\r\n`;
const m1 = `member1.${TEST_CLUSTER_DOMAIN}`;
const other = `other.${TEST_CLUSTER_DOMAIN}`;
const address = `127.0.0.1:${tether.server.port}`;

t.test("the serving certificate covers every member's host name", async (t) => {
  const names = await new Promise<string>((resolve, reject) => {
    const s = tlsConnect({
      host: "127.0.0.1",
      port: tether.server.port,
      ca: tether.ca.certPem,
      servername: m1,
    });
    s.once("secureConnect", () => {
      resolve(s.getPeerCertificate().subjectaltname ?? "");
      s.destroy();
    });
    s.once("error", reject);
  });
  t.match(names, `DNS:*.${TEST_CLUSTER_DOMAIN}`);
});

t.test("kubectl proxy without --append-server-path", async (t) => {
  const proxy = member.spawnKubectl(["proxy", "--port=0"], { kubeconfig: hostKc });
  t.teardown(() => proxy.stop());
  const port = (await proxy.waitFor(/Starting to serve on 127\.0\.0\.1:(\d+)/))[1];
  const list = await fetch(`http://127.0.0.1:${port}/api/v1/namespaces`);
  t.equal(list.status, 200, "GET");
  const names = ((await list.json()) as { items: { metadata: { name: string } }[] }).items.map(
    (i) => i.metadata.name,
  );
  t.ok(names.includes("kube-system"), "the member's namespaces");

  const ac = new AbortController();
  t.teardown(() => ac.abort());
  const watch = await fetch(`http://127.0.0.1:${port}/api/v1/namespaces/default/configmaps?watch=1`, {
    signal: ac.signal,
  });
  t.equal(watch.status, 200, "watch");
  const reader = watch.body!.getReader();
  await member.kubectl(["create", "configmap", "seen-through-kubectl-proxy"]);
  let seen = "";
  while (!seen.includes("seen-through-kubectl-proxy")) {
    const { value, done } = await reader.read();
    if (done) break;
    seen += Buffer.from(value).toString("utf8");
  }
  t.match(seen, /"type":"ADDED".*seen-through-kubectl-proxy/, "the watch event arrives");
  ac.abort();

  // The path form, the same way, gets the 404 that says what to do.
  const pathKc = `${hostKc}-path`;
  await writeFile(
    pathKc,
    (await readFile(hostKc, "utf8"))
      .replace(/server: (\S+)/, "server: $1/clusters/member1")
      .replace(/^\s*tls-server-name: .*\n/m, ""),
  );
  const pathProxy = member.spawnKubectl(["proxy", "--port=0"], { kubeconfig: pathKc });
  t.teardown(() => pathProxy.stop());
  const pathPort = (await pathProxy.waitFor(/Starting to serve on 127\.0\.0\.1:(\d+)/))[1];
  const lost = await fetch(`http://127.0.0.1:${pathPort}/api/v1/namespaces`);
  t.equal(lost.status, 404);
  t.match(((await lost.json()) as { message: string }).message, /--append-server-path/);
});

t.test("SNI first, then Host; two members disagreeing is a 421", async (t) => {
  const auth = token;
  let r = await raw(m1, get("/version", address, auth));
  t.equal(r.status, 200, "SNI names the member, Host the server's address (tls-server-name)");
  t.match(r.body, /gitVersion/);
  r = await raw(undefined, get("/version", m1, auth));
  t.equal(r.status, 200, "no SNI: the Host header routes");
  r = await raw(m1, get("/version", m1, auth));
  t.equal(r.status, 200, "both agree");
  r = await raw(m1, get("/version", other, auth));
  t.equal(r.status, 421, "SNI says member1, Host says other");
  t.match(r.body, /"reason":"MisdirectedRequest"/);
  t.match(r.body, /cluster \\?"member1\\?".*\\?"other\\?"/);
  // The same for an upgrade.
  r = await raw(
    m1,
    `GET /api/v1/namespaces/default/pods/x/exec HTTP/1.1\r\nHost: ${other}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
  );
  t.equal(r.status, 421, "an upgrade too");
  // A member's host name reaches only the member: Tether's own endpoints are not there.
  r = await raw(m1, get("/join/v1/ca", address));
  t.equal(r.status, 401, "/join/ on a member host goes to the member (and needs a caller)");
  r = await raw(m1, `GET http://evil.example/api HTTP/1.1\r\nHost: ${address}\r\nConnection: close\r\n\r\n`);
  t.equal(r.status, 400, "an absolute-form target is refused");
  r = await raw(undefined, get("/version", `x.y.${TEST_CLUSTER_DOMAIN}`, auth));
  t.equal(r.status, 404, "two labels are no member name: the server's own 404");
  t.match(r.body, /--append-server-path.*https:\/\/<name>\.clusters\.tether\.test\//);
  // Path routing keeps working next to it.
  r = await raw(undefined, get("/clusters/member1/version", address, auth));
  t.equal(r.status, 200, "the path form still works");
});
