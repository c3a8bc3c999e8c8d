// The admin commands, run as the CLI runs them (runCli: parsing, the command,
// one-line errors) against temporary state directories, and the same entry
// point spawned as separate processes for the cross-process cases.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { caHashOf } from "@tether/common";
import t, { type Test } from "tap";
import { parse as parseYaml } from "yaml";
import {
  ERR_TETHER_BAD_DURATION,
  ERR_TETHER_BAD_LABEL,
  ERR_TETHER_CLUSTER_EXISTS,
  ERR_TETHER_NO_SERVER_URL,
  ERR_TETHER_RESERVED_GROUP,
  ERR_TETHER_UNKNOWN_CLUSTER,
  formatDuration,
  parseDuration,
  parseLabels,
  serveUrl,
} from "../../src/admin/admin-input.js";
import { clusterAdd, clusterRemove, joinToken, kubeconfig } from "../../src/cli/admin-commands.js";
import { runCliCaptured } from "../../src/cli/cli.js";
import { formatTable } from "../../src/cli/output-format.js";
import { adminFor } from "../../src/cli/store-options.js";
import { ERR_TETHER_INVALID_CLUSTER_NAME } from "../../src/pki/pki.js";
import { hashToken } from "../../src/pki/tokens.js";
import { FileStore } from "../../src/store/file-store.js";

const cli = (...args: string[]) => runCliCaptured(args);

const SERVER = "https://tether.example.com:8443";
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const repoRoot = new URL("../../../../", import.meta.url).pathname;
const mainTs = new URL("../../src/main.ts", import.meta.url).pathname;

async function tempStateDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "tether-admin-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Asserts a failed run: exit 1, nothing on stdout, exactly one "tether-server: …" line on stderr. */
function assertFailed(t: Test, r: { code: number; stdout: string; stderr: string }, pattern: RegExp) {
  t.equal(r.code, 1, "exit code 1");
  t.equal(r.stdout, "", "nothing on stdout");
  t.match(r.stderr, /^tether-server: [^\n]+\n$/, "one line on stderr");
  t.match(r.stderr, pattern);
  t.notMatch(r.stderr, / {4}at /, "no stack trace");
}

/** A coded error from calling a command function directly. */
async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
}

const quiet = (stateDir: string) => ({
  out: () => {},
  admin: (server?: string) => adminFor({ stateDir }, server),
});

t.test("parseDuration", async (t) => {
  t.equal(parseDuration("90s"), 90_000);
  t.equal(parseDuration("15m"), 15 * 60_000);
  t.equal(parseDuration("24h"), DAY);
  t.equal(parseDuration("7d"), 7 * DAY);
  t.equal(parseDuration("1h30m"), 90 * 60_000);
  for (const bad of ["", "5", "h", "1.5h", "-1h", "1w", "1 h", "24H", "1h 30m"]) {
    t.throws(() => parseDuration(bad), { code: ERR_TETHER_BAD_DURATION }, `refuses ${JSON.stringify(bad)}`);
  }
  t.equal(formatDuration(30 * DAY), "30d");
  t.equal(formatDuration(90_000), "90s");
});

t.test("parseLabels follows Kubernetes label syntax", async (t) => {
  t.same(parseLabels(["region=eu", "example.com/tier=gold", "empty="]), {
    region: "eu",
    "example.com/tier": "gold",
    empty: "",
  });
  for (const bad of [["noequals"], ["=v"], ["k=has space"], ["-k=v"], ["k=v", "k=w"], ["Bad_/k=v"]]) {
    t.throws(() => parseLabels(bad), { code: ERR_TETHER_BAD_LABEL }, `refuses ${JSON.stringify(bad)}`);
  }
});

t.test("serveUrl", async (t) => {
  t.equal(serveUrl("0.0.0.0", 8443), "https://127.0.0.1:8443");
  t.equal(serveUrl("::", 8443), "https://127.0.0.1:8443");
  t.equal(serveUrl("10.1.2.3", 9000), "https://10.1.2.3:9000");
  t.equal(serveUrl("::1", 9000), "https://[::1]:9000");
  t.equal(serveUrl("0.0.0.0", 8443, "https://tether.example.com"), "https://tether.example.com");
});

t.test("formatTable aligns columns and shows <none> for empty cells", async (t) => {
  t.equal(
    formatTable(
      ["a", "bb"],
      [
        ["xyz", ""],
        ["q", "r\ns"],
      ],
    ),
    "A     BB\nxyz   <none>\nq     r s\n",
  );
});

t.test("cluster add -o json: every field, a join token that works exactly once", async (t) => {
  const dir = await tempStateDir(t);
  const r = await cli(
    "cluster",
    "add",
    "prod-eu",
    "--state-dir",
    dir,
    "--server",
    SERVER + "/",
    "--label",
    "region=eu",
    "--label",
    "tier=gold",
    "--auth",
    "passthrough",
    "--allow-user",
    "alice",
    "--allow-group",
    "platform",
    "--token-ttl",
    "2h",
    "-o",
    "json",
  );
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stderr, "");
  const info = JSON.parse(r.stdout); // exactly one JSON document
  t.equal(info.name, "prod-eu");
  t.equal(info.server, SERVER, "trailing slash dropped");
  t.equal(info.auth, "passthrough");
  t.same(info.labels, { region: "eu", tier: "gold" });
  t.same(info.allowedUsers, ["alice"]);
  t.same(info.allowedGroups, ["platform"]);
  t.match(info.token, /^tether_[A-Za-z0-9_-]{43}$/);
  t.equal(info.caHash, caHashOf(await readFile(join(dir, "ca.crt"), "utf8")));
  t.equal(
    info.agentCommand,
    `TETHER_JOIN_TOKEN=${info.token} tether-agent --server ${SERVER} --cluster prod-eu --ca-hash ${info.caHash}`,
  );

  const store = await FileStore.open(dir);
  const cluster = await store.getCluster("prod-eu");
  t.match(cluster, {
    name: "prod-eu",
    auth: "passthrough",
    labels: { region: "eu", tier: "gold" },
    allowedUsers: ["alice"],
    allowedGroups: ["platform"],
  });
  const record = await store.findToken(hashToken(info.token));
  t.match(record, { kind: "join", cluster: "prod-eu", expiresAt: info.expiresAt });
  const created = Date.parse(cluster!.createdAt);
  const expires = Date.parse(info.expiresAt);
  t.ok(expires - created >= 2 * HOUR, "expiry is --token-ttl after creation");
  t.notOk(await store.consumeJoinToken(hashToken(info.token), "prod-us"), "not for another cluster");
  t.ok(await store.consumeJoinToken(hashToken(info.token), "prod-eu"), "joins once");
  t.notOk(await store.consumeJoinToken(hashToken(info.token), "prod-eu"), "not twice");
  const tokens = JSON.stringify(await store.listTokens());
  t.notMatch(tokens, info.token, "the token itself is not stored");
});

t.test("cluster add (human output) uses the URL serve recorded", async (t) => {
  const dir = await tempStateDir(t);
  await (await FileStore.open(dir)).recordServerUrl("https://10.0.0.7:8443");
  const r = await cli("cluster", "add", "edge-1", "--state-dir", dir);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^Cluster edge-1 added\.$/m);
  t.match(r.stdout, /^Server: +https:\/\/10\.0\.0\.7:8443$/m);
  t.match(r.stdout, /^Auth: +impersonate$/m);
  t.match(r.stdout, /^CA hash: +sha256:[0-9a-f]{64}$/m);
  const token = /^Join token: +(tether_\S+)$/m.exec(r.stdout)?.[1];
  t.ok(token, "prints the token");
  t.match(r.stdout, /^Expires: +\d{4}-\d\d-\d\dT.*Z \(single use\)$/m);
  t.match(
    r.stdout,
    new RegExp(
      `^ {2}TETHER_JOIN_TOKEN=${token} tether-agent --server https://10\\.0\\.0\\.7:8443 --cluster edge-1 --ca-hash sha256:[0-9a-f]{64}$`,
      "m",
    ),
  );
  const store = await FileStore.open(dir);
  t.ok(await store.findToken(hashToken(token!)), "a live join token");
});

t.test("cluster add refuses a duplicate, a bad name, bad labels and a bad --auth", async (t) => {
  const dir = await tempStateDir(t);
  t.equal((await cli("cluster", "add", "dup", "--state-dir", dir, "--server", SERVER)).code, 0);
  const dup = await cli("cluster", "add", "dup", "--state-dir", dir, "--server", SERVER);
  assertFailed(t, dup, /cluster dup already exists.*tether-server join-token dup/);
  t.equal(await codeOf(clusterAdd(quiet(dir), "dup", { server: SERVER })), ERR_TETHER_CLUSTER_EXISTS);

  const bad = await cli("cluster", "add", "Prod_EU", "--state-dir", dir, "--server", SERVER);
  assertFailed(t, bad, /invalid cluster name "Prod_EU": a cluster name must be a DNS-1123 label/);
  t.equal(
    await codeOf(clusterAdd(quiet(dir), "Prod_EU", { server: SERVER })),
    ERR_TETHER_INVALID_CLUSTER_NAME,
  );

  assertFailed(
    t,
    await cli("cluster", "add", "x", "--state-dir", dir, "--server", SERVER, "--label", "nope"),
    /invalid label "nope"/,
  );
  assertFailed(
    t,
    await cli("cluster", "add", "x", "--state-dir", dir, "--server", SERVER, "--auth", "root"),
    /argument 'root' is invalid.*impersonate, passthrough/,
  );
  assertFailed(
    t,
    await cli(
      "cluster",
      "add",
      "x",
      "--state-dir",
      dir,
      "--server",
      SERVER,
      "--allow-group",
      "system:masters",
    ),
    /group name "system:masters" is reserved/,
  );
  assertFailed(
    t,
    await cli("cluster", "add", "x", "--state-dir", dir, "--server", SERVER, "--token-ttl", "31d"),
    /--token-ttl must be at most 30d/,
  );
  assertFailed(
    t,
    await cli("cluster", "add", "x", "--state-dir", dir, "--server", "http://plain:80"),
    /must be an https:\/\/ URL/,
  );
  const store = await FileStore.open(dir);
  t.same(
    (await store.listClusters()).map((c) => c.name),
    ["dup"],
    "nothing written by refused commands",
  );
  t.equal((await store.listTokens()).length, 1, "only dup's join token");
});

t.test("a missing server URL is a clear error, before anything is written", async (t) => {
  const dir = join(await tempStateDir(t), "state");
  const r = await cli("cluster", "add", "c1", "--state-dir", dir);
  assertFailed(t, r, /no server URL: pass --server https:\/\/<host>:<port>/);
  t.equal(await codeOf(clusterAdd(quiet(dir), "c1")), ERR_TETHER_NO_SERVER_URL);
  t.equal(await codeOf(kubeconfig(quiet(dir), "c1", { user: "alice" })), ERR_TETHER_NO_SERVER_URL);
  t.equal(await codeOf(joinToken(quiet(dir), "c1")), ERR_TETHER_NO_SERVER_URL);
  await t.rejects(readFile(join(dir, "clusters.json")), { code: "ENOENT" });
});

t.test("cluster list: table, json and yaml", async (t) => {
  const dir = await tempStateDir(t);
  const empty = await cli("cluster", "list", "--state-dir", dir);
  t.equal(empty.code, 0);
  t.match(empty.stdout, /^No clusters/);
  t.same(JSON.parse((await cli("cluster", "list", "--state-dir", dir, "-o", "json")).stdout), {
    clusters: [],
  });

  await cli("cluster", "add", "beta", "--state-dir", dir, "--server", SERVER, "--label", "env=prod");
  await cli("cluster", "add", "alpha", "--state-dir", dir, "--server", SERVER, "--allow-user", "bob");

  const table = await cli("cluster", "list", "--state-dir", dir);
  t.equal(table.code, 0, table.stderr);
  const lines = table.stdout.trimEnd().split("\n");
  t.equal(lines.length, 3);
  t.match(
    lines[0],
    /^NAME +AUTH +LABELS +CONNECTED +RTT +AGENT +KUBERNETES +ALLOWED USERS +ALLOWED GROUPS +CREATED$/,
  );
  // From the store alone nobody knows whether an agent is connected: the columns say so.
  t.match(lines[1], /^alpha +impersonate +<none> +unknown +unknown +unknown +unknown +bob +<none> +\d{4}-/);
  t.match(
    lines[2],
    /^beta +impersonate +env=prod +unknown +unknown +unknown +unknown +<none> +<none> +\d{4}-/,
  );

  const json = JSON.parse((await cli("cluster", "list", "--state-dir", dir, "-o", "json")).stdout);
  t.same(
    json.clusters.map((c: { name: string }) => c.name),
    ["alpha", "beta"],
  );
  t.match(json.clusters[1], { name: "beta", auth: "impersonate", labels: { env: "prod" }, allowedUsers: [] });
  t.match(json.clusters[0].createdAt, /^\d{4}-\d\d-\d\dT/);
  t.equal(json.clusters[0].connection, null, "json: the connection is unknown, not false");

  const yaml = parseYaml((await cli("cluster", "ls", "--state-dir", dir, "--output", "yaml")).stdout);
  t.same(yaml, json, "yaml says the same as json");

  assertFailed(t, await cli("cluster", "list", "--state-dir", dir, "-o", "xml"), /argument 'xml' is invalid/);
});

t.test("cluster remove: revokes certificates, deletes tokens and the record", async (t) => {
  const dir = await tempStateDir(t);
  const add = JSON.parse(
    (await cli("cluster", "add", "gone", "--state-dir", dir, "--server", SERVER, "-o", "json")).stdout,
  );
  const extra = JSON.parse(
    (await cli("join-token", "gone", "--state-dir", dir, "--server", SERVER, "-o", "json")).stdout,
  );
  const keep = JSON.parse(
    (await cli("cluster", "add", "kept", "--state-dir", dir, "--server", SERVER, "-o", "json")).stdout,
  );
  const kc = parseYaml(
    (await cli("kubeconfig", "gone", "--state-dir", dir, "--server", SERVER, "--user", "alice")).stdout,
  );
  const userToken: string = kc.users[0].user.token;
  const store = await FileStore.open(dir);
  const notAfter = new Date(Date.now() + DAY).toISOString();
  await store.recordIssued("0a1b2c", "gone", notAfter);
  await store.recordIssued("0d0e0f", "kept", notAfter);
  // A multi-cluster user token (not made by this CLI) loses only the removed cluster.
  const multi = hashToken("tether_multi-cluster-test-token");
  await store.addToken({
    hash: multi,
    kind: "user",
    user: "ops",
    clusters: ["gone", "kept"],
    expiresAt: notAfter,
  });

  const r = await cli("cluster", "remove", "gone", "--state-dir", dir);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /Cluster gone removed: revoked its agent certificates, deleted 2 unused join tokens/);
  t.match(r.stdout, /1 user token scoped to it/);
  t.notMatch(r.stdout, /tether_/, "no token printed");

  t.notOk(await store.getCluster("gone"), "record gone");
  t.ok(await store.isRevoked("0a1b2c"), "its serial revoked");
  t.notOk(await store.isRevoked("0d0e0f"), "another cluster's serial untouched");
  t.notOk(await store.findToken(hashToken(add.token)), "join token deleted");
  t.notOk(await store.findToken(hashToken(extra.token)), "second join token deleted");
  t.notOk(await store.consumeJoinToken(hashToken(add.token), "gone"));
  t.notOk(await store.findToken(hashToken(userToken)), "user token scoped to it deleted");
  t.match(await store.findToken(multi), { user: "ops", clusters: ["kept"] });
  t.ok(await store.findToken(hashToken(keep.token)), "other cluster's join token kept");
  t.ok(await store.getCluster("kept"));

  const again = await cli("cluster", "remove", "gone", "--state-dir", dir);
  assertFailed(t, again, /no cluster named gone/);
  t.equal(await codeOf(clusterRemove(quiet(dir), "gone")), ERR_TETHER_UNKNOWN_CLUSTER);
});

t.test("join-token: a new token for an existing cluster only", async (t) => {
  const dir = await tempStateDir(t);
  const unknown = await cli("join-token", "nope", "--state-dir", dir, "--server", SERVER);
  assertFailed(t, unknown, /no cluster named nope/);
  t.equal(await codeOf(joinToken(quiet(dir), "nope", { server: SERVER })), ERR_TETHER_UNKNOWN_CLUSTER);

  const first = JSON.parse(
    (
      await cli(
        "cluster",
        "add",
        "c1",
        "--state-dir",
        dir,
        "--server",
        SERVER,
        "--label",
        "a=b",
        "-o",
        "json",
      )
    ).stdout,
  );
  const r = await cli(
    "join-token",
    "c1",
    "--state-dir",
    dir,
    "--server",
    SERVER,
    "--token-ttl",
    "15m",
    "-o",
    "json",
  );
  t.equal(r.code, 0, r.stderr);
  const info = JSON.parse(r.stdout);
  for (const key of ["name", "token", "caHash", "server", "agentCommand", "expiresAt", "auth", "labels"]) {
    t.ok(key in info, `has ${key}`);
  }
  t.not(info.token, first.token);
  t.equal(info.caHash, first.caHash, "same CA");
  t.same(info.labels, { a: "b" });
  const store = await FileStore.open(dir);
  t.ok(await store.consumeJoinToken(hashToken(info.token), "c1"));
  t.ok(await store.consumeJoinToken(hashToken(first.token), "c1"), "the first token is still valid");

  const human = await cli("join-token", "c1", "--state-dir", dir, "--server", SERVER);
  t.match(human.stdout, /^New join token for cluster c1\.$/m);
  t.match(human.stdout, /tether-agent --server /);
});

t.test("kubeconfig: a user token scoped to the cluster", async (t) => {
  const dir = await tempStateDir(t);
  await cli("cluster", "add", "prod-eu", "--state-dir", dir, "--server", SERVER);
  const before = Date.now();
  const r = await cli(
    "kubeconfig",
    "prod-eu",
    "--state-dir",
    dir,
    "--server",
    SERVER,
    "--user",
    "alice@example.com",
    "--group",
    "dev",
    "--group",
    "ops",
    "--ttl",
    "2h",
  );
  const after = Date.now();
  t.equal(r.code, 0, r.stderr);
  const kc = parseYaml(r.stdout);
  t.equal(kc.kind, "Config");
  t.equal(kc["current-context"], "prod-eu");
  t.equal(kc.contexts[0].name, "prod-eu");
  t.equal(kc.contexts[0].context.cluster, "prod-eu");
  t.equal(kc.contexts[0].context.user, kc.users[0].name);
  t.equal(kc.clusters[0].name, "prod-eu");
  t.equal(kc.clusters[0].cluster.server, `${SERVER}/clusters/prod-eu`);
  t.match(kc.clusters[0].cluster.server, /\/clusters\/prod-eu$/);
  t.equal(
    Buffer.from(kc.clusters[0].cluster["certificate-authority-data"], "base64").toString("utf8"),
    await readFile(join(dir, "ca.crt"), "utf8"),
  );
  const token: string = kc.users[0].user.token;
  const store = await FileStore.open(dir);
  const record = await store.findToken(hashToken(token));
  t.match(record, { kind: "user", user: "alice@example.com", groups: ["dev", "ops"], clusters: ["prod-eu"] });
  const expires = Date.parse(record!.expiresAt);
  t.ok(expires >= before + 2 * HOUR && expires <= after + 2 * HOUR, "expires --ttl after issuing");

  const json = await cli(
    "kubeconfig",
    "prod-eu",
    "--state-dir",
    dir,
    "--server",
    SERVER,
    "--user",
    "bob",
    "-o",
    "json",
  );
  t.equal(json.code, 0, json.stderr);
  const kcj = JSON.parse(json.stdout);
  t.equal(kcj.clusters[0].cluster.server, `${SERVER}/clusters/prod-eu`);
  const bobRecord = await store.findToken(hashToken(kcj.users[0].user.token));
  t.match(bobRecord, { user: "bob", groups: [], clusters: ["prod-eu"] });
  const bobExpiry = Date.parse(bobRecord!.expiresAt) - Date.parse(new Date().toISOString());
  t.ok(bobExpiry <= DAY, "default ttl is 24h");
});

t.test("kubeconfig and kubefed --cluster-domain print the host form", async (t) => {
  const dir = await tempStateDir(t);
  await cli("cluster", "add", "m1", "--state-dir", dir, "--server", SERVER);
  const base = ["--state-dir", dir, "--server", SERVER];
  const r = await cli(
    "kubeconfig",
    "m1",
    ...base,
    "--user",
    "alice",
    "--cluster-domain",
    "Clusters.Example.com",
  );
  t.equal(r.code, 0, r.stderr);
  const kc = parseYaml(r.stdout);
  t.equal(kc.clusters[0].cluster.server, SERVER, "the server's own address, no /clusters/ path");
  t.equal(kc.clusters[0].cluster["tls-server-name"], "m1.clusters.example.com");
  const fed = await cli("kubefed", "m1", ...base, "--cluster-domain", "clusters.example.com", "-o", "json");
  t.equal(fed.code, 0, fed.stderr);
  const endpoint = JSON.parse(fed.stdout).items.find((o: { kind: string }) => o.kind === "KubeFedCluster")
    .spec.apiEndpoint;
  t.equal(endpoint, `https://m1.clusters.example.com:${new URL(SERVER).port || 443}`.replace(/:443$/, ""));
  const bad = await cli("kubeconfig", "m1", ...base, "--user", "a", "--cluster-domain", "nodots");
  t.equal(bad.code, 1);
  t.match(bad.stderr, /--cluster-domain/);
});

t.test("kubeconfig refuses bad input", async (t) => {
  const dir = await tempStateDir(t);
  await cli("cluster", "add", "c1", "--state-dir", dir, "--server", SERVER);
  const base = ["kubeconfig", "c1", "--state-dir", dir, "--server", SERVER];
  assertFailed(t, await cli(...base, "--user", "a", "--ttl", "0s"), /--ttl must be longer than 0/);
  assertFailed(t, await cli(...base, "--user", "a", "--ttl", "366d"), /--ttl must be at most 365d/);
  assertFailed(t, await cli(...base, "--user", "a", "--ttl", "soon"), /invalid duration "soon"/);
  assertFailed(t, await cli(...base, "--user", "a", "--ttl", "-1h"), /invalid duration/);
  assertFailed(
    t,
    await cli(...base, "--user", "a", "--group", "dev", "--group", "system:masters"),
    /group name "system:masters" is reserved/,
  );
  t.equal(
    await codeOf(kubeconfig(quiet(dir), "c1", { user: "a", groups: ["System:Masters"], server: SERVER })),
    ERR_TETHER_RESERVED_GROUP,
  );
  assertFailed(t, await cli(...base, "--user", "system:admin"), /user name "system:admin" is reserved/);
  assertFailed(t, await cli(...base, "--user", ""), /invalid user name ""/);
  assertFailed(t, await cli(...base), /required option '--user <user>' not specified/);
  assertFailed(
    t,
    await cli("kubeconfig", "nope", "--state-dir", dir, "--server", SERVER, "--user", "a"),
    /no cluster named nope/,
  );
  assertFailed(t, await cli(...base, "--user", "a", "--ttl", "1h", "extra"), /too many arguments/);
  const store = await FileStore.open(dir);
  t.same(
    (await store.listTokens()).map((r) => r.kind),
    ["join"],
    "no user token issued by a refused command",
  );
});

t.test("usage errors are one line and exit 1; --help succeeds", async (t) => {
  assertFailed(t, await cli("cluster", "bogus"), /unknown command 'bogus'/);
  assertFailed(t, await cli("cluster", "add"), /missing required argument 'name'/);
  assertFailed(t, await cli("cluster", "add", "x", "--nope"), /unknown option '--nope'/);
  const help = await cli("cluster", "add", "--help");
  t.equal(help.code, 0);
  t.match(help.stdout, /--label <key=value>/);
  t.match(help.stdout, /--state-dir <dir>/);
  const top = await cli("--help");
  t.equal(top.code, 0);
  for (const cmd of ["serve", "cluster", "join-token", "kubeconfig"]) t.match(top.stdout, cmd);
});

/** Runs src/main.ts (what bin/tether-server.js runs, from source) in its own process. */
function spawnMain(args: string[]): ChildProcess {
  return spawn(process.execPath, ["--import=tsx", "--conditions=tether-source", mainTs, ...args], {
    cwd: repoRoot,
    stdio: ["ignore", "pipe", "pipe"],
  });
}

function finished(child: ChildProcess): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => {
    stdout += d;
  });
  child.stderr!.on("data", (d) => {
    stderr += d;
  });
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}

t.test("10 concurrent cluster adds from separate processes all land", async (t) => {
  const dir = await tempStateDir(t);
  // One CA up front, as a running server would have made it.
  await (await FileStore.open(dir)).loadOrCreateCa();
  const names = Array.from({ length: 10 }, (_, i) => `member-${i}`);
  const results = await Promise.all(
    names.map((name) =>
      finished(spawnMain(["cluster", "add", name, "--state-dir", dir, "--server", SERVER, "-o", "json"])),
    ),
  );
  const store = await FileStore.open(dir);
  for (const [i, r] of results.entries()) {
    t.equal(r.code, 0, `${names[i]}: ${r.stderr}`);
    const info = JSON.parse(r.stdout);
    t.equal(info.name, names[i]);
    t.ok(await store.findToken(hashToken(info.token)), `${names[i]}'s join token is stored`);
  }
  t.same(
    (await store.listClusters()).map((c) => c.name),
    names,
  );
  t.equal((await store.listTokens()).length, 10);
});

t.test("serve records its URL in server.json, which the admin commands use", async (t) => {
  const dir = await tempStateDir(t);
  const child = spawnMain(["serve", "--state-dir", dir, "--listen", "127.0.0.1:0"]);
  const done = finished(child);
  t.teardown(() => {
    if (child.exitCode === null) child.kill("SIGKILL");
  });
  let info: { url?: string } | undefined;
  for (let i = 0; i < 300 && !info; i++) {
    info = await readFile(join(dir, "server.json"), "utf8").then(JSON.parse, () => undefined);
    if (!info) {
      if (child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  t.ok(info, "server.json written");
  t.match(info?.url, /^https:\/\/127\.0\.0\.1:[1-9]\d*$/);
  const r = await cli("cluster", "add", "c1", "--state-dir", dir, "-o", "json");
  t.equal(r.code, 0, r.stderr);
  t.equal(JSON.parse(r.stdout).server, info?.url);
  child.kill("SIGTERM");
  const exit = await done;
  t.equal(exit.code, 0, "stops cleanly on SIGTERM");
});

t.test("a corrupt server.json is reported, not guessed around", async (t) => {
  const dir = await tempStateDir(t);
  await writeFile(join(dir, "server.json"), "{not json");
  assertFailed(t, await cli("cluster", "add", "c1", "--state-dir", dir), /server\.json is not valid JSON/);
  await writeFile(join(dir, "server.json"), JSON.stringify({ url: "ftp://x" }));
  assertFailed(t, await cli("cluster", "add", "c1", "--state-dir", dir), /must be an https:\/\/ URL/);
});

t.test(
  "the printed agent command keeps the join token out of the agent's argv (ps shows argv)",
  async (t) => {
    const dir = await tempStateDir(t);
    // A stand-in tether-agent that reports what it was started with.
    const bin = join(dir, "bin");
    const { mkdir, chmod } = await import("node:fs/promises");
    await mkdir(bin);
    await writeFile(
      join(bin, "tether-agent"),
      `#!/bin/sh\nprintf '%s\\n' "$@" > "$REPORT.argv"\nprintf '%s' "$TETHER_JOIN_TOKEN" > "$REPORT.env"\n`,
    );
    await chmod(join(bin, "tether-agent"), 0o755);
    const run = async (command: string, report: string) => {
      const child = spawn("/bin/sh", ["-c", command], {
        env: { PATH: `${bin}:/usr/bin:/bin`, REPORT: report },
        stdio: "ignore",
      });
      await new Promise((resolve) => child.once("close", resolve));
      return {
        argv: (await readFile(`${report}.argv`, "utf8")).trimEnd().split("\n"),
        env: await readFile(`${report}.env`, "utf8"),
      };
    };
    const added = JSON.parse(
      (await cli("cluster", "add", "m1", "--state-dir", dir, "--server", SERVER, "-o", "json")).stdout,
    );
    const again = JSON.parse(
      (await cli("join-token", "m1", "--state-dir", dir, "--server", SERVER, "-o", "json")).stdout,
    );
    const human = await cli("join-token", "m1", "--state-dir", dir, "--server", SERVER);
    const printed = /^ {2}(.*tether-agent .*)$/m.exec(human.stdout)?.[1];
    const token = /^Join token: +(tether_\S+)$/m.exec(human.stdout)?.[1];
    t.ok(printed && token, "the human output has a command and a token");
    for (const [what, command, joinToken] of [
      ["cluster add", added.agentCommand, added.token],
      ["join-token", again.agentCommand, again.token],
      ["join-token (human output)", printed!, token!],
    ] as const) {
      const seen = await run(command, join(dir, what.replace(/\W+/g, "-")));
      t.same(
        seen.argv,
        ["--server", SERVER, "--cluster", "m1", "--ca-hash", added.caHash],
        `${what}: the agent's argv holds no token`,
      );
      t.notMatch(seen.argv.join(" "), /tether_/, `${what}: nothing token-like in argv`);
      t.equal(seen.env, joinToken, `${what}: the token reaches the agent as TETHER_JOIN_TOKEN`);
    }
  },
);
