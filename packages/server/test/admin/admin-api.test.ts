// The admin API on a real TetherServer (HTTPS on loopback, a FileStore in a
// temporary directory): who may call it, each route, bad bodies refused while
// the server keeps serving, and the admin CLI's remote mode (--credential)
// against it, compared with the local mode on the same state.
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import t, { type Test } from "tap";
import { ensureAdminCredential } from "../../src/admin/admin-credential.js";
import { runCliCaptured } from "../../src/cli/cli.js";
import { createLogger } from "../../src/logger.js";
import { CertificateAuthority } from "../../src/pki/pki.js";
import { hashToken, issueToken } from "../../src/pki/tokens.js";
import { TetherServer } from "../../src/server.js";
import { FileStore } from "../../src/store/file-store.js";
import { KubeApiError } from "../../src/store/kube-api.js";
import { ADMIN_CREDENTIAL_FILE } from "../../src/store/state-store.js";

const cli = (...args: string[]) => runCliCaptured(args);

async function startServer(t: Test) {
  const dir = await mkdtemp(join(tmpdir(), "tether-admin-api-"));
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
  const credential = await ensureAdminCredential(store, server.url, server.ca.certPem);
  const credentialFile = join(store.dir, ADMIN_CREDENTIAL_FILE);
  return { dir, store, server, credential, credentialFile };
}

function call(
  url: string,
  caPem: string,
  method: string,
  path: string,
  options: { token?: string; body?: string | Buffer; cert?: { certPem: string; keyPem?: string } } = {},
): Promise<{ status: number; body: Record<string, unknown> | undefined }> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}${path}`,
      {
        method,
        ca: caPem,
        ...(options.cert ? { cert: options.cert.certPem, key: options.cert.keyPem ?? "" } : {}),
        headers: {
          ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
          ...(options.body === undefined ? {} : { "content-type": "application/json" }),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let body: Record<string, unknown> | undefined;
          try {
            body = JSON.parse(text);
          } catch {}
          resolve({ status: res.statusCode ?? 0, body });
        });
      },
    );
    req.on("error", (err) => {
      // A server that answers before reading an oversized body may reset the upload.
      if (
        (err as NodeJS.ErrnoException).code === "EPIPE" ||
        (err as NodeJS.ErrnoException).code === "ECONNRESET"
      ) {
        resolve({ status: -1, body: undefined });
      } else reject(err);
    });
    req.end(options.body);
  });
}

t.test("who may call the admin API", async (t) => {
  const { store, server, credential } = await startServer(t);
  const ca = server.ca.certPem;
  const none = await call(server.url, ca, "GET", "/admin/v1/clusters");
  t.equal(none.status, 401, "no token: 401");
  t.equal(none.body?.code, "ERR_TETHER_ADMIN_UNAUTHORIZED");
  t.match(none.body?.message, /--credential/);
  const unknown = await call(server.url, ca, "GET", "/admin/v1/clusters", { token: issueToken().token });
  t.equal(unknown.status, 401, "unknown token: 401");

  const user = issueToken();
  await store.addToken({
    hash: user.hash,
    kind: "user",
    user: "alice",
    clusters: ["*"],
    expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  });
  const asUser = await call(server.url, ca, "GET", "/admin/v1/clusters", { token: user.token });
  t.equal(asUser.status, 403, "a user token, even for every cluster: 403");
  t.equal(asUser.body?.code, "ERR_TETHER_ADMIN_FORBIDDEN");

  const join = issueToken();
  await store.addToken({
    hash: join.hash,
    kind: "join",
    cluster: "c1",
    expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  });
  t.equal(
    (await call(server.url, ca, "GET", "/admin/v1/clusters", { token: join.token })).status,
    403,
    "a join token: 403",
  );
  const ok = await call(server.url, ca, "GET", "/admin/v1/clusters", { token: credential.token });
  t.equal(ok.status, 200, "the admin token: 200");
  t.same(ok.body, { clusters: [] });

  const clusterCert = await server.ca.issueClusterCertificate("c1");
  const asCluster = await call(server.url, ca, "GET", "/admin/v1/clusters", { cert: clusterCert });
  t.equal(asCluster.status, 403, "a cluster certificate: 403");
  t.equal(asCluster.body?.code, "ERR_TETHER_ADMIN_FORBIDDEN");
  const userCert = await server.ca.issueUserCertificate("alice", ["ops"]);
  t.equal(
    (await call(server.url, ca, "GET", "/admin/v1/clusters", { cert: userCert })).status,
    403,
    "a user certificate: 403",
  );
  const strangerCa = await CertificateAuthority.create();
  const stranger = await strangerCa.issueClusterCertificate("c1");
  t.equal(
    (await call(server.url, ca, "GET", "/admin/v1/clusters", { cert: stranger })).status,
    401,
    "a certificate from another CA is no one: 401",
  );
  t.equal(
    (await call(server.url, ca, "GET", "/admin/v1/clusters", { cert: clusterCert, token: credential.token }))
      .status,
    200,
    "the admin token decides, whatever certificate comes with it",
  );

  await store.addCluster({
    name: "m1",
    auth: "impersonate",
    labels: {},
    allowedUsers: [],
    allowedGroups: [],
    createdAt: new Date().toISOString(),
  });
  const proxied = await call(server.url, ca, "GET", "/clusters/m1/api", { token: credential.token });
  t.equal(proxied.status, 401, "the admin token is no user token: the cluster proxy refuses it");
});

t.test("routes, and bad input refused while the server keeps serving", async (t) => {
  const { store, server, credential } = await startServer(t);
  const ca = server.ca.certPem;
  const as = (method: string, path: string, body?: unknown) =>
    call(server.url, ca, method, path, {
      token: credential.token,
      ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) }),
    });

  const added = await as("POST", "/admin/v1/clusters", {
    name: "edge-1",
    labels: { region: "eu" },
    allowedGroups: ["ops"],
    tokenTtlMs: 3600_000,
  });
  t.equal(added.status, 201, JSON.stringify(added.body));
  t.match(added.body, { name: "edge-1", server: server.url, token: /^tether_/, caHash: server.ca.caHash });
  t.ok(
    await store.consumeJoinToken(hashToken(added.body?.token as string), "edge-1"),
    "its join token is a real, unused join token",
  );
  t.match(await store.getCluster("edge-1"), { labels: { region: "eu" }, allowedGroups: ["ops"] });

  const dup = await as("POST", "/admin/v1/clusters", { name: "edge-1", tokenTtlMs: 60_000 });
  t.equal(dup.status, 409);
  t.equal(dup.body?.code, "ERR_TETHER_CLUSTER_EXISTS");

  const jt = await as("POST", "/admin/v1/clusters/edge-1/join-tokens", { ttlMs: 60_000 });
  t.equal(jt.status, 201);
  t.match(jt.body, { name: "edge-1", token: /^tether_/ });
  const ut = await as("POST", "/admin/v1/clusters/edge-1/user-tokens", {
    user: "bob",
    groups: ["dev"],
    ttlMs: 60_000,
  });
  t.equal(ut.status, 201);
  t.match(await store.findToken(hashToken(ut.body?.token as string)), {
    kind: "user",
    user: "bob",
    clusters: ["edge-1"],
  });
  t.equal((await as("POST", "/admin/v1/clusters/nope/join-tokens", { ttlMs: 60_000 })).status, 404);

  const cases: [string, string, string, unknown, RegExp][] = [
    ["not JSON", "POST", "/admin/v1/clusters", "{name:", /JSON object/],
    ["an array", "POST", "/admin/v1/clusters", "[]", /JSON object/],
    [
      "unknown field",
      "POST",
      "/admin/v1/clusters",
      { name: "x", tokenTtlMs: 1000, admin: true },
      /unknown field "admin"/,
    ],
    [
      "wrong type",
      "POST",
      "/admin/v1/clusters",
      { name: 7, tokenTtlMs: 1000 },
      /field name has the wrong type/,
    ],
    ["missing field", "POST", "/admin/v1/clusters", { name: "x" }, /field tokenTtlMs is required/],
    ["bad name", "POST", "/admin/v1/clusters", { name: "Bad_Name", tokenTtlMs: 1000 }, /DNS-1123/],
    [
      "ttl too long",
      "POST",
      "/admin/v1/clusters/edge-1/join-tokens",
      { ttlMs: 400 * 86_400_000 },
      /at most 30d/,
    ],
    [
      "reserved group",
      "POST",
      "/admin/v1/clusters/edge-1/user-tokens",
      { user: "a", groups: ["system:masters"], ttlMs: 1000 },
      /reserved/,
    ],
    ["unknown route", "GET", "/admin/v1/secrets", undefined, /no admin API route/],
    ["bad percent-encoding", "DELETE", "/admin/v1/clusters/%E0%A4%A", undefined, /percent-encoding/],
  ];
  for (const [what, method, path, body, message] of cases) {
    const r = await as(method, path, body);
    t.ok(r.status >= 400 && r.status < 500, `${what}: ${r.status}`);
    t.match(r.body?.message, message, what);
  }
  const big = await call(server.url, ca, "POST", "/admin/v1/clusters", {
    token: credential.token,
    body: Buffer.alloc(70 * 1024, 0x20),
  });
  t.ok(big.status === 400 || big.status === -1, `a 70 KiB body is refused (${big.status})`);
  const list = await as("GET", "/admin/v1/clusters");
  t.equal(list.status, 200, "the server still serves");
  t.same(
    ((list.body?.clusters ?? []) as { name: string }[]).map((c) => c.name),
    ["edge-1"],
    "and nothing else was added",
  );

  const removed = await as("DELETE", "/admin/v1/clusters/edge-1");
  t.equal(removed.status, 200);
  t.match(removed.body, { name: "edge-1", userTokensDeleted: 1 });
  t.equal(await store.getCluster("edge-1"), undefined);
});

t.test("the admin CLI with --credential drives the running server", async (t) => {
  const { dir, store, server, credentialFile } = await startServer(t);
  const remote = ["--credential", credentialFile];
  const local = ["--state-dir", store.dir];

  const add = await cli("cluster", "add", "m1", "--label", "env=prod", "-o", "json", ...remote);
  t.equal(add.code, 0, add.stderr);
  const info = JSON.parse(add.stdout);
  t.match(info, {
    name: "m1",
    server: server.url,
    token: /^tether_/,
    agentCommand: /^TETHER_JOIN_TOKEN=tether_\S+ tether-agent --server /,
  });
  const listedLocally = JSON.parse((await cli("cluster", "list", "-o", "json", ...local)).stdout);
  t.same(
    listedLocally.clusters.map((c: { name: string }) => c.name),
    ["m1"],
    "a remote add shows in a local list",
  );
  const listedRemotely = await cli("cluster", "list", "-o", "json", ...remote);
  const remoteList = JSON.parse(listedRemotely.stdout);
  t.same(
    remoteList.clusters.map((c: { connection: unknown }) => c.connection),
    [{ connected: false }],
    "the server says whether an agent is connected",
  );
  t.same(
    listedLocally.clusters.map((c: { connection: unknown }) => c.connection),
    [null],
    "the store alone does not know",
  );
  const strip = (l: { clusters: Record<string, unknown>[] }) =>
    l.clusters.map(({ connection: _, ...record }) => record);
  t.same(strip(remoteList), strip(listedLocally), "remote and local lists are the same otherwise");

  const token = await cli("join-token", "m1", "-o", "json", ...remote);
  t.equal(token.code, 0, token.stderr);
  t.ok(await store.consumeJoinToken(hashToken(JSON.parse(token.stdout).token), "m1"), "a usable join token");

  const kc = await cli("kubeconfig", "m1", "--user", "carol", "--ttl", "1h", ...remote);
  t.equal(kc.code, 0, kc.stderr);
  t.match(kc.stdout, new RegExp(`server: ${server.url}/clusters/m1`));

  const dup = await cli("cluster", "add", "m1", ...remote);
  t.equal(dup.code, 1);
  t.match(
    dup.stderr,
    /^tether-server: ERR_TETHER_CLUSTER_EXISTS: cluster m1 already exists/,
    "server errors read as local ones, code first",
  );

  const rm = await cli("cluster", "remove", "m1", ...remote);
  t.equal(rm.code, 0, rm.stderr);
  t.match(rm.stdout, /Cluster m1 removed/);
  t.equal(await store.getCluster("m1"), undefined);

  await t.test("clear errors", async (t) => {
    const loose = join(dir, "loose.json");
    await writeFile(loose, await readFile(credentialFile));
    await chmod(loose, 0o644);
    const r1 = await cli("cluster", "list", "--credential", loose);
    t.equal(r1.code, 1);
    t.match(r1.stderr, /may be read by other users .*chmod 600/);

    const otherCa = await CertificateAuthority.create();
    const wrong = join(dir, "wrong-ca.json");
    const doc = JSON.parse(await readFile(credentialFile, "utf8"));
    await writeFile(wrong, JSON.stringify({ ...doc, caCertificate: otherCa.certPem }), { mode: 0o600 });
    const r2 = await cli("cluster", "list", "--credential", wrong);
    t.equal(r2.code, 1);
    t.match(r2.stderr, /not from the CA in the credential/);

    const garbage = join(dir, "garbage.json");
    await writeFile(garbage, "hello", { mode: 0o600 });
    t.match((await cli("cluster", "list", "--credential", garbage)).stderr, /not a Tether admin credential/);

    await server.close();
    const r3 = await cli("cluster", "list", ...remote);
    t.equal(r3.code, 1);
    t.match(r3.stderr, /cannot reach tether-server at .*is "tether-server serve" running there\?/);
  });
});

t.test("a store's coded error answers with its catalogue status, whichever class threw it", async (t) => {
  const { store, server, credential, credentialFile } = await startServer(t);
  const ca = server.ca.certPem;
  const as = (method: string, path: string, body?: unknown) =>
    call(server.url, ca, method, path, {
      token: credential.token,
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  const addCluster = store.addCluster.bind(store);
  // What KubeStore throws when the Cluster object kept changing under it.
  store.addCluster = async () => {
    throw new KubeApiError("ERR_TETHER_KUBE_CONFLICT", "cluster m2 kept changing; try again");
  };
  const conflict = await as("POST", "/admin/v1/clusters", { name: "m2", tokenTtlMs: 3600_000 });
  t.equal(conflict.status, 409, "a Kubernetes conflict is a 409, not a 500");
  t.same(conflict.body, { code: "ERR_TETHER_KUBE_CONFLICT", message: "cluster m2 kept changing; try again" });
  const remote = await cli("cluster", "add", "m2", "--credential", credentialFile);
  t.equal(remote.code, 1);
  t.equal(
    remote.stderr,
    "tether-server: ERR_TETHER_KUBE_CONFLICT: cluster m2 kept changing; try again\n",
    "the remote CLI prints the server's code",
  );

  store.addCluster = async () => {
    throw new KubeApiError(
      "ERR_TETHER_KUBE_UNREACHABLE",
      "cannot reach the host cluster's apiserver 10.0.0.1:6443",
    );
  };
  const unreachable = await as("POST", "/admin/v1/clusters", { name: "m2", tokenTtlMs: 3600_000 });
  t.equal(unreachable.status, 503, "the host cluster out of reach: 503");
  t.equal(unreachable.body?.code, "ERR_TETHER_KUBE_UNREACHABLE");

  store.addCluster = async () => {
    throw Object.assign(new Error("EACCES: /var/lib/tether/clusters.json"), { code: "ERR_TETHER_STATE_DIR" });
  };
  const noStatus = await as("POST", "/admin/v1/clusters", { name: "m2", tokenTtlMs: 3600_000 });
  t.same(
    noStatus,
    { status: 500, body: { code: "ERR_TETHER_INTERNAL", message: "tether-server failed; see its log" } },
    "a code the catalogue gives no status stays inside the server",
  );
  store.addCluster = async () => {
    throw new TypeError("x is undefined");
  };
  const unknown = await as("POST", "/admin/v1/clusters", { name: "m2", tokenTtlMs: 3600_000 });
  t.same(unknown, noStatus, "an uncoded error: 500 ERR_TETHER_INTERNAL");
  store.addCluster = addCluster;
  t.equal(
    (await as("POST", "/admin/v1/clusters", { name: "m2", tokenTtlMs: 3600_000 })).status,
    201,
    "still serving",
  );

  // Before the caller is known to be the admin, a store failure tells nothing.
  store.findToken = async () => {
    throw new KubeApiError(
      "ERR_TETHER_KUBE_UNREACHABLE",
      "cannot reach the host cluster's apiserver 10.0.0.1:6443",
    );
  };
  const anonymous = await call(server.url, ca, "GET", "/admin/v1/clusters", { token: issueToken().token });
  t.same(
    anonymous,
    { status: 500, body: { code: "ERR_TETHER_INTERNAL", message: "tether-server failed; see its log" } },
    "an unauthenticated caller learns nothing of the store",
  );
});

t.test("an address the serving certificate does not name", async (t) => {
  // Linux routes all of 127/8 to loopback; the certificate names 127.0.0.1, ::1 and localhost only.
  const dir = await mkdtemp(join(tmpdir(), "tether-admin-api-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const store = await FileStore.open(join(dir, "state"));
  const server = await TetherServer.start({
    store,
    host: "127.0.0.2",
    port: 0,
    log: createLogger({ level: "silent" }),
  });
  t.teardown(() => server.close());
  const elsewhere = `https://127.0.0.2:${server.port}`;
  await ensureAdminCredential(store, elsewhere, server.ca.certPem);
  const r = await cli("cluster", "list", "--credential", join(store.dir, ADMIN_CREDENTIAL_FILE));
  t.equal(r.code, 1);
  t.match(r.stderr, /does not match certificate's altnames.*--external-url naming 127\.0\.0\.2$/m);
});

t.test("tokens never reach the server's log", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "tether-admin-api-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  let logged = "";
  const log = createLogger(
    { level: "trace" },
    new Writable({
      write(chunk, _encoding, done) {
        logged += chunk.toString();
        done();
      },
    }),
  );
  const store = await FileStore.open(join(dir, "state"));
  const server = await TetherServer.start({ store, host: "127.0.0.1", port: 0, log });
  t.teardown(() => server.close());
  const credential = await ensureAdminCredential(store, server.url, server.ca.certPem, log);
  const file = join(store.dir, ADMIN_CREDENTIAL_FILE);
  const add = await cli("cluster", "add", "m1", "-o", "json", "--credential", file);
  const user = await cli("kubeconfig", "m1", "--user", "u", "-o", "json", "--credential", file);
  t.equal(add.code + user.code, 0, add.stderr + user.stderr);
  const ca = server.ca.certPem;
  await call(server.url, ca, "POST", "/admin/v1/clusters", { token: credential.token, body: "{" });
  await call(server.url, ca, "GET", "/admin/v1/clusters/m1/nope", { token: credential.token });
  const joinToken = JSON.parse(add.stdout).token as string;
  await call(server.url, ca, "GET", "/admin/v1/clusters", { token: joinToken });
  t.match(logged, /admin credential written/, "the log has lines to search");
  t.match(logged, /admin API request refused/);
  for (const [what, secret] of [
    ["the admin token", credential.token],
    ["a join token", joinToken],
    ["a user token", /tether_[A-Za-z0-9_-]{43}/.exec(user.stdout)?.[0]],
  ]) {
    t.ok(secret?.startsWith("tether_"), `${what} was issued`);
    t.notOk(logged.includes(secret as string), `${what} is not in the log`);
  }
});

t.test("token routes: list without secrets, revoke by id or user, bad input refused", async (t) => {
  const { server, credential, store } = await startServer(t);
  const admin = (method: string, path: string, body?: unknown) =>
    call(server.url, server.ca.certPem, method, path, {
      token: credential.token,
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  await store.putCluster({
    name: "m1",
    auth: "impersonate",
    labels: {},
    allowedUsers: [],
    allowedGroups: [],
    createdAt: new Date().toISOString(),
  });
  const issued = [];
  for (const user of ["alice", "alice", "bob"]) {
    const r = await admin("POST", "/admin/v1/clusters/m1/user-tokens", {
      user,
      groups: ["g"],
      ttlMs: 3600_000,
    });
    t.equal(r.status, 201);
    issued.push(r.body!.token as string);
  }
  const all = await admin("GET", "/admin/v1/tokens");
  t.equal(all.status, 200);
  const tokens = all.body!.tokens as { id: string; user: string; clusters: string[] }[];
  t.same(
    tokens.map((x) => x.user),
    ["alice", "alice", "bob"],
    "user tokens only: not the admin token",
  );
  t.match(tokens[0], { id: /^tok_[0-9a-f]{16}$/, groups: ["g"], clusters: ["m1"], expiresAt: String });
  const text = JSON.stringify(all.body);
  for (const tok of issued) {
    t.notOk(text.includes(tok), "no token in the list");
    t.notOk(text.includes(hashToken(tok).slice(7)), "no hash in the list");
  }
  const bobs = await admin("GET", "/admin/v1/tokens?user=bob");
  t.same(
    (bobs.body!.tokens as { user: string }[]).map((x) => x.user),
    ["bob"],
  );
  t.equal((await admin("GET", "/admin/v1/tokens?user=a&user=b")).status, 400, "user twice");
  t.equal((await admin("GET", "/admin/v1/tokens?who=bob")).status, 400, "an unknown parameter");
  t.equal((await admin("POST", "/admin/v1/token-revocations", {})).status, 400, "neither id nor user");
  t.equal(
    (await admin("POST", "/admin/v1/token-revocations", { id: tokens[2]!.id, user: "bob" })).status,
    400,
    "both",
  );
  t.match(await admin("POST", "/admin/v1/token-revocations", { id: "tok_nope" }), {
    status: 400,
    body: { code: "ERR_TETHER_INVALID_TOKEN_ID" },
  });
  t.match(await admin("POST", "/admin/v1/token-revocations", { id: "tok_0123456789abcdef" }), {
    status: 404,
    body: { code: "ERR_TETHER_UNKNOWN_TOKEN" },
  });
  const one = await admin("POST", "/admin/v1/token-revocations", { id: tokens[2]!.id });
  t.match(one, { status: 200, body: { revoked: [{ id: tokens[2]!.id, user: "bob" }] } });
  t.equal(await store.findToken(hashToken(issued[2]!)), undefined, "bob's token is gone");
  const byUser = await admin("POST", "/admin/v1/token-revocations", { user: "alice" });
  t.equal((byUser.body!.revoked as unknown[]).length, 2, "both of alice's");
  t.same((await admin("GET", "/admin/v1/tokens")).body, { tokens: [] });
  t.ok(await store.findToken(hashToken(credential.token)), "the admin token is untouched");
});
