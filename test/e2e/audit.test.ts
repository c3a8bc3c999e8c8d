// Issue 15, must show: kubectl get, list, watch, create, delete, exec (SPDY
// and WebSocket) and port-forward, and a refused request, through a
// tether-server process started with --audit-log in front of a real
// kube-apiserver; each audit line is checked field by field. The cluster is
// added, the user's kubeconfig issued and the agent joined through the
// server (admin API and join endpoint), so those events, and the agent's
// connection, are in the file too.
// Then every secret of the run — the join token, the user's token, a guessed
// token, the admin token, the agent's service-account token, and the exec
// command — is looked for in the audit file and in the server's and agent's
// logs: none may appear.
import { readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FileStore, runCliCaptured } from "@tether/server";
import t from "tap";
import { startClusters } from "../kube/index.js";
import { ManagedProcess } from "../kube/processes.js";
import { bindTetherAdmins, prepareMember, until } from "./fixture.js";
import { rawRequest } from "./raw-client.js";
import { AGENT_BIN, FAST_TIMING, spawnServer } from "./tether-processes.js";

type Line = Record<string, unknown>;

const set = await startClusters(1);
t.teardown(() => set.stop());
const member = set.clusters[0]!;
const dir = await mkdtemp(join(tmpdir(), "tether-audit-e2e-"));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const stateDir = join(dir, "state");
const caPem = (await (await FileStore.open(stateDir)).loadOrCreateCa()).certPem;
const auditPath = join(dir, "audit.log");
const serverLog = join(dir, "server.log");
const { proc: server, url } = await spawnServer(stateDir, caPem, serverLog, FAST_TIMING, [
  "--audit-log",
  auditPath,
]);
t.teardown(() => server.stop());
const credential = join(stateDir, "admin-credential.json");
await until("serve wrote the admin credential", async () =>
  readFile(credential, "utf8").then(
    () => true,
    () => false,
  ),
);
const adminToken = (JSON.parse(await readFile(credential, "utf8")) as { token: string }).token;

async function admin(args: string[]): Promise<string> {
  const r = await runCliCaptured([...args, "--credential", credential]);
  if (r.code !== 0) throw new Error(`tether-server ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

// Through the admin API: the cluster, then alice's kubeconfig.
const added = JSON.parse(await admin(["cluster", "add", "m1", "-o", "json"])) as {
  token: string;
  caHash: string;
};
const joinToken = added.token;
const aliceText = await admin(["kubeconfig", "m1", "--user", "alice", "--group", "admins", "-o", "json"]);
const aliceToken = (JSON.parse(aliceText) as { users: { user: { token: string } }[] }).users[0]!.user.token;
const kubeconfig = join(dir, "kc-alice");
await writeFile(kubeconfig, aliceText, { mode: 0o600 });

// The agent joins with the one-time token, as in a member cluster.
await bindTetherAdmins(member);
await member.createPod("default", "box");
const saDir = join(dir, "sa");
const env = await prepareMember(member, saDir);
const saToken = (await readFile(join(saDir, "token"), "utf8")).trim();
const tokenFile = join(dir, "join-token");
await writeFile(tokenFile, joinToken, { mode: 0o600 });
const agentLog = join(dir, "agent.log");
const agent = new ManagedProcess(
  "tether-agent",
  process.execPath,
  [
    AGENT_BIN,
    "--server",
    url,
    "--cluster",
    "m1",
    "--token-file",
    tokenFile,
    "--ca-hash",
    added.caHash,
    "--state-dir",
    join(dir, "agent-state"),
    "--service-account-dir",
    saDir,
    "--keepalive",
    String(FAST_TIMING.keepaliveSeconds),
    "--dead-peer-timeout",
    String(FAST_TIMING.deadPeerTimeoutSeconds),
  ],
  agentLog,
  { ...process.env, ...env },
);
t.teardown(() => agent.stop());
const k = (args: string[], options: { env?: NodeJS.ProcessEnv; kubeconfig?: string; input?: string } = {}) =>
  member.kubectl(args, { kubeconfig, ...options });
await until(
  "the agent joined and connected",
  async () => {
    agent.assertRunning();
    return (await k(["get", "--raw", "/version"])).code === 0;
  },
  60_000,
);

async function auditLines(): Promise<Line[]> {
  const text = await readFile(auditPath, "utf8").catch(() => "");
  return text
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as Line);
}

/** The audit lines that match `fields` (a line is written when its response closes: wait for it). */
async function linesMatching(fields: Line, count = 1): Promise<Line[]> {
  let found: Line[] = [];
  await until(`${count} audit line(s) ${JSON.stringify(fields)}`, async () => {
    found = (await auditLines()).filter((l) =>
      Object.entries(fields).every(([key, v]) => JSON.stringify(l[key]) === JSON.stringify(v)),
    );
    return found.length >= count;
  });
  return found;
}

const ALICE = { cluster: "m1", auth: "token", user: "alice", groups: ["admins"], sourceAddress: "127.0.0.1" };

t.test("the admin API calls and the join are audited", async (t) => {
  const [add] = await linesMatching({ kind: "admin", action: "cluster.add" });
  t.match(add, { stage: "complete", cluster: "m1", method: "POST", path: "/admin/v1/clusters", code: 201 });
  const [issue] = await linesMatching({ kind: "admin", action: "user-token.create" });
  t.match(issue, { cluster: "m1", subjectUser: "alice", subjectGroups: ["admins"], code: 201 });
  const [joined] = await linesMatching({ kind: "join", path: "/join/v1/certificate" });
  t.match(joined, { stage: "complete", cluster: "m1", method: "POST", code: 200, serial: /^[0-9a-f]+$/i });
  const [connected] = await linesMatching({ kind: "agent", stage: "connected", cluster: "m1" });
  t.match(
    connected,
    { serial: joined!.serial, sourceAddress: "127.0.0.1", agentVersion: /\S/ },
    "the agent's tunnel",
  );
});

t.test("create, get, list, delete: one line each, field by field", async (t) => {
  t.equal((await k(["create", "configmap", "audited", "--from-literal=a=b"])).code, 0);
  t.equal((await k(["get", "configmap", "audited", "-o", "name"])).stdout.trim(), "configmap/audited");
  t.match((await k(["get", "configmaps"])).stdout, /audited/);
  t.equal((await k(["delete", "configmap", "audited"])).code, 0);
  const base = { kind: "request", stage: "complete", ...ALICE, apiGroup: "", apiVersion: "v1" };
  const configmaps = { resource: "configmaps", subresource: "", namespace: "default" };
  const [create] = await linesMatching({ ...base, verb: "create", ...configmaps });
  t.match(create, { name: "", code: 201, path: "/api/v1/namespaces/default/configmaps" });
  t.ok((create!.bytesIn as number) > 20, `the body's bytes in: ${create!.bytesIn}`);
  t.ok((create!.bytesOut as number) > 20, `the answer's bytes out: ${create!.bytesOut}`);
  t.match(create!.userAgent, /^kubectl/);
  t.match(create!.requestId, /^[0-9a-f-]{36}$/);
  const [get] = await linesMatching({ ...base, verb: "get", ...configmaps, name: "audited" });
  t.match(get, { code: 200, bytesIn: 0, path: "/api/v1/namespaces/default/configmaps/audited" });
  const [list] = await linesMatching({ ...base, verb: "list", ...configmaps, name: "" });
  t.match(list, { code: 200, bytesIn: 0 });
  t.ok((list!.bytesOut as number) > 0);
  const [del] = await linesMatching({ ...base, verb: "delete", ...configmaps, name: "audited" });
  t.match(del, { code: 200 });
  t.type(del!.durationMs, "number");
});

t.test("a watch: its line when the caller ends it", async (t) => {
  await member.kubectl(["create", "configmap", "watch-anchor"]);
  const watch = member.spawnKubectl(["get", "configmaps", "-w", "--output-watch-events"], { kubeconfig });
  await watch.waitFor(/ADDED\s+watch-anchor/);
  await member.kubectl(["delete", "configmap", "watch-anchor"]);
  await watch.waitFor(/DELETED\s+watch-anchor/);
  await watch.stop();
  const [line] = await linesMatching({ kind: "request", verb: "watch", resource: "configmaps" });
  t.match(line, { ...ALICE, stage: "complete", namespace: "default", name: "", code: 200, complete: false });
  t.ok((line!.bytesOut as number) > 0, "the events' bytes");
});

const SECRET_COMMAND = `audit-secret-${Math.random().toString(36).slice(2)}`;

for (const transport of ["spdy", "websocket"] as const) {
  t.test(`exec over ${transport}: a start and an end line`, async (t) => {
    const env = { ...process.env, KUBECTL_REMOTE_COMMAND_WEBSOCKETS: String(transport === "websocket") };
    const r = await k(["exec", "-i", "box", "--", "sh", "-c", `cat; echo ${SECRET_COMMAND}-${transport}`], {
      env,
      input: "in",
    });
    t.equal(r.code, 0, r.stderr);
    const verb = transport === "websocket" ? "get" : "create";
    const pod = { ...ALICE, verb, resource: "pods", subresource: "exec", namespace: "default", name: "box" };
    const [start] = await linesMatching({ kind: "upgrade", stage: "start", ...pod });
    t.match(start, { code: 101, path: "/api/v1/namespaces/default/pods/box/exec" });
    const [end] = await linesMatching({ kind: "upgrade", stage: "end", requestId: start!.requestId });
    t.match(end, { ...pod, code: 101 });
    t.ok((end!.bytesOut as number) > 0, `bytes out ${end!.bytesOut}`);
    t.ok((end!.bytesIn as number) >= 0, `bytes in ${end!.bytesIn}`);
    t.type(end!.durationMs, "number");
  });
}

t.test("port-forward: a start and an end line", async (t) => {
  const http = createServer((req, res) => res.end(`hello ${req.url}`));
  await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
  t.teardown(() => new Promise<void>((r) => http.close(() => r())));
  const port = (http.address() as { port: number }).port;
  const pf = member.spawnKubectl(["port-forward", "pod/box", `:${port}`], { kubeconfig });
  const m = await pf.waitFor(/Forwarding from 127\.0\.0\.1:(\d+) ->/);
  t.equal(await (await fetch(`http://127.0.0.1:${m[1]}/pf`)).text(), "hello /pf");
  await pf.stop();
  const pod = { ...ALICE, resource: "pods", subresource: "portforward", namespace: "default", name: "box" };
  const [start] = await linesMatching({ kind: "upgrade", stage: "start", ...pod });
  t.match(start, { code: 101 });
  const [end] = await linesMatching({ kind: "upgrade", stage: "end", requestId: start!.requestId });
  t.match(end, { ...pod, code: 101 });
  t.ok((end!.bytesIn as number) > 0 && (end!.bytesOut as number) > 0, "bytes both ways");
});

const GUESSED = `tether_${"A".repeat(43)}`;

t.test("a refused request: its code and reason; the request id comes back", async (t) => {
  const bad = join(dir, "kc-guess");
  await writeFile(bad, aliceText.replace(aliceToken, GUESSED), { mode: 0o600 });
  const r = await k(["get", "pods"], { kubeconfig: bad });
  t.not(r.code, 0);
  const [refused] = await linesMatching({ kind: "request", stage: "refused", code: 401 });
  t.match(refused, {
    cluster: "m1",
    auth: "none",
    verb: "list",
    resource: "pods",
    namespace: "default",
    reason: "Unauthorized",
    message: /could not authenticate you/,
  });
  t.notOk("user" in refused!, "no user for an unauthenticated caller");

  const raw = await rawRequest({ url, caPem }, "/clusters/m1/api/v1/namespaces/default/pods/box", {
    headers: { authorization: `Bearer ${aliceToken}` },
  });
  t.equal(raw.status, 200);
  const id = raw.headers["x-tether-request-id"];
  t.match(id, /^[0-9a-f-]{36}$/, "X-Tether-Request-Id");
  const [line] = await linesMatching({ requestId: id });
  t.match(line, { ...ALICE, verb: "get", resource: "pods", name: "box", code: 200 });
});

t.test("no secret anywhere: the audit file, the server's log, the agent's log", async (t) => {
  const files = {
    audit: await readFile(auditPath, "utf8"),
    "server log": await readFile(serverLog, "utf8"),
    "agent log": await readFile(agentLog, "utf8"),
  };
  const secrets = {
    "the join token": joinToken,
    "alice's token": aliceToken,
    "the guessed token": GUESSED,
    "the admin token": adminToken,
    "the agent's service-account token": saToken,
    "the exec command": SECRET_COMMAND,
  };
  for (const [fileName, text] of Object.entries(files)) {
    t.ok(text.length > 0, `${fileName} is not empty`);
    for (const [what, secret] of Object.entries(secrets)) {
      t.ok(secret.length >= 16, `${what} is a real string`);
      t.notOk(text.includes(secret), `${what} is not in the ${fileName}`);
    }
  }
  t.notMatch(files.audit, /authorization|bearer/i, "no Authorization value in the audit file");
  t.notMatch(files.audit, /\?/, "no query string in the audit file");
  const lines = await auditLines();
  t.ok(lines.length >= 15, `${lines.length} lines, each one JSON object`);
  const shown = new Set<string>();
  for (const line of lines) {
    const key = `${line.kind}/${line.stage}/${line.subresource ?? ""}`;
    if (shown.has(key)) continue;
    shown.add(key);
    t.comment(JSON.stringify(line));
  }
  const { mode } = await import("node:fs/promises").then((fs) => fs.stat(auditPath));
  t.equal(mode & 0o777, 0o600, "the audit file is 0600");
});
