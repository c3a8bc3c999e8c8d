// Issue 16: a user token that is revoked (`tether-server token revoke`, on the
// state while the server runs, or through the admin API) or expires ends the
// watch, exec, port-forward and logs -f it holds open, and new requests get
// 401 — the expired one saying it expired and how to get a new token. kubectl
// against the real harness. The bounds below are liveness limits; the measured times
// are printed as comments.
import { appendFile, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import { Agent, request } from "node:https";
import { join } from "node:path";
import { runCliCaptured } from "@tether/server";
import t from "tap";
import { ensureAdminCredential } from "../../packages/server/src/admin/admin-credential.js";
import { type KubectlProcess, startClusters, writeKubeconfig } from "../kube/index.js";
import { bindTetherAdmins, startTether } from "./fixture.js";

const set = await startClusters(1);
t.teardown(() => set.stop());
const member = set.clusters[0]!;
await bindTetherAdmins(member);
await member.createPod("default", "box");
const tether = await startTether();
t.teardown(() => tether.stop());
// Every caller below is in "admins"; a user certificate reaches only clusters that list its user or group.
await tether.registerCluster("m1", "impersonate", { groups: ["admins"] });
await tether.startAgent("m1", member);
const state = tether.store.dir;

const http = createServer((req, res) => res.end(`hello ${req.url}`));
await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
t.teardown(() => new Promise<void>((r) => http.close(() => r())));
const httpPort = (http.address() as { port: number }).port;

/** A watch, an exec, a port-forward and a logs -f held open with `kubeconfig`, each shown to work first. */
async function holdStreams(kubeconfig: string, tag: string): Promise<Record<string, KubectlProcess>> {
  await member.kubectl(["create", "configmap", `held-${tag}`]);
  const watch = member.spawnKubectl(["get", "configmaps", "-w", "-o", "name"], { kubeconfig });
  const exec = member.spawnKubectl(["exec", "-i", "box", "--", "sh", "-c", "echo ready; cat"], {
    kubeconfig,
  });
  const portForward = member.spawnKubectl(["port-forward", "pod/box", `:${httpPort}`], { kubeconfig });
  await appendFile(member.logFile("default", "box", "main"), `log line ${tag}\n`);
  const logs = member.spawnKubectl(["logs", "-f", "box"], { kubeconfig });
  t.teardown(async () => {
    await Promise.all([watch.stop(), exec.stop(), portForward.stop(), logs.stop()]);
  });
  await logs.waitFor(new RegExp(`log line ${tag}`));
  await watch.waitFor(new RegExp(`configmap/held-${tag}`));
  await exec.waitFor(/ready/);
  const m = await portForward.waitFor(/Forwarding from 127\.0\.0\.1:(\d+) ->/);
  const body = await (await fetch(`http://127.0.0.1:${m[1]}/before`)).text();
  if (body !== "hello /before") throw new Error(`port-forward answered ${body}`);
  return { watch, exec, portForward, logs };
}

/** Waits for every process to exit (liveness bound `limitMs`); returns the ms each took from `since`. */
async function ended(
  procs: Record<string, KubectlProcess>,
  since: number,
  limitMs: number,
): Promise<Record<string, number | "still running">> {
  const out: Record<string, number | "still running"> = {};
  await Promise.all(
    Object.entries(procs).map(async ([name, p]) => {
      const exited = await Promise.race([
        p.exited.then(() => true),
        new Promise<false>((r) => setTimeout(() => r(false), limitMs)),
      ]);
      out[name] = exited ? Date.now() - since : "still running";
    }),
  );
  return out;
}

const get = (kubeconfig: string) =>
  member.kubectl(["get", "--raw", "/api/v1/namespaces/default"], { kubeconfig });

t.test(
  "token revoke on the state ends a watch, an exec, a port-forward and a logs -f; then 401",
  async (t) => {
    const kubeconfig = await tether.userKubeconfig("m1", "alice", ["admins"]);
    t.equal((await get(kubeconfig)).code, 0, "the token works");
    const procs = await holdStreams(kubeconfig, "revoke");
    const listed = await runCliCaptured([
      "token",
      "list",
      "--state-dir",
      state,
      "--user",
      "alice",
      "-o",
      "json",
    ]);
    t.equal(listed.code, 0, listed.stderr);
    const tokens = (JSON.parse(listed.stdout) as { tokens: { id: string; user: string }[] }).tokens;
    t.equal(tokens.length, 1, "alice has one token");
    t.notMatch(listed.stdout, /sha256|tether_/, "neither the token nor its hash is listed");
    const since = Date.now();
    const revoked = await runCliCaptured(["token", "revoke", tokens[0]!.id, "--state-dir", state]);
    t.equal(revoked.code, 0, revoked.stderr);
    const times = await ended(procs, since, 5_000);
    t.comment(`ended after revoke (ms): ${JSON.stringify(times)}`);
    for (const [name, ms] of Object.entries(times)) t.type(ms, "number", `${name} ended`);
    const after = await get(kubeconfig);
    t.not(after.code, 0);
    t.match(after.stderr, /Unauthorized|must be logged in/, "a new request gets 401");
  },
);

t.test("token revoke --user through the admin API ends the streams at once", async (t) => {
  const kubeconfig = await tether.userKubeconfig("m1", "bob", ["admins"]);
  const procs = await holdStreams(kubeconfig, "admin-api");
  await ensureAdminCredential(tether.store, tether.server.url, tether.ca.certPem);
  const credential = `${state}/admin-credential.json`;
  const since = Date.now();
  const revoked = await runCliCaptured(["token", "revoke", "--user", "bob", "--credential", credential]);
  t.equal(revoked.code, 0, revoked.stderr);
  t.match(revoked.stdout, /Revoked 1 token of user bob: tok_[0-9a-f]{16}\./);
  const times = await ended(procs, since, 5_000);
  t.comment(`ended after admin API revoke (ms): ${JSON.stringify(times)}`);
  for (const [name, ms] of Object.entries(times)) t.type(ms, "number", `${name} ended`);
  t.not((await get(kubeconfig)).code, 0, "a new request is refused");
});

t.test("an expiring token ends what it holds; its 401 says it expired and how to get another", async (t) => {
  const ttlMs = 10_000;
  const issued = Date.now();
  // Issued as an admin would: tether-server kubeconfig with a short --ttl.
  const printed = await runCliCaptured([
    "kubeconfig",
    "m1",
    "--user",
    "carol",
    "--group",
    "admins",
    "--ttl",
    `${ttlMs / 1000}s`,
    "--state-dir",
    state,
    "--server",
    tether.server.url,
  ]);
  t.equal(printed.code, 0, printed.stderr);
  const kubeconfig = join(tether.dir, "carol.kubeconfig");
  await writeFile(kubeconfig, printed.stdout, { mode: 0o600 });
  const procs = await holdStreams(kubeconfig, "expiry");
  t.ok(Date.now() < issued + ttlMs, "the streams were up before the token expired");
  const times = await ended(procs, issued + ttlMs, issued + ttlMs - Date.now() + 5_000);
  t.comment(`ended after expiry (ms past it): ${JSON.stringify(times)}`);
  for (const [name, ms] of Object.entries(times)) t.type(ms, "number", `${name} ended`);
  const after = await get(kubeconfig);
  t.not(after.code, 0);
  t.match(
    after.stderr,
    /must be logged in to the server \(your Tether token expired at \S+: ask an admin for a new one \(tether-server kubeconfig m1 --user carol/,
    "kubectl shows the 401's message",
  );
});

t.test(
  "a user certificate's notAfter ends what it holds; a kept-alive connection cannot outlive it",
  async (t) => {
    const ttlMs = 12_000;
    const cert = await tether.ca.issueUserCertificate("dave", ["admins"], { ttlMs });
    const notAfter = cert.notAfter.getTime();
    const kubeconfig = await writeKubeconfig(join(tether.dir, "dave-cert"), {
      name: "m1",
      server: `${tether.server.url}/clusters/m1`,
      caPem: tether.ca.certPem,
      certPem: cert.certPem,
      keyPem: cert.keyPem!,
    });
    t.equal((await get(kubeconfig)).code, 0, "the certificate works");
    // One kept-alive TLS connection, used before and after the certificate's end.
    const agent = new Agent({
      keepAlive: true,
      maxSockets: 1,
      ca: tether.ca.certPem,
      cert: cert.certPem,
      key: cert.keyPem!,
    });
    t.teardown(() => agent.destroy());
    const sockets = new Set<unknown>();
    const ask = () =>
      new Promise<number>((resolve, reject) => {
        const req = request(`${tether.server.url}/clusters/m1/api`, { agent }, (res) => {
          sockets.add(res.socket);
          res.resume();
          res.on("end", () => resolve(res.statusCode ?? 0));
        });
        req.on("error", reject);
        req.end();
      });
    t.equal(await ask(), 200, "a request on the kept-alive connection");
    const procs = await holdStreams(kubeconfig, "cert");
    t.ok(Date.now() < notAfter, "the streams were up before the certificate ended");
    const times = await ended(procs, notAfter, notAfter - Date.now() + 5_000);
    t.comment(`ended after the certificate's notAfter (ms past it): ${JSON.stringify(times)}`);
    for (const [name, ms] of Object.entries(times)) t.type(ms, "number", `${name} ended`);
    t.equal(await ask(), 401, "the same connection's next request is refused");
    t.equal(sockets.size, 1, "both requests went over one connection");
  },
);
