// Who may read /metrics on a real TetherServer: the admin token and the
// --metrics-token-file token get 200; no credential or an unknown one 401
// (a failed authentication of the source, counted and rate limited like the
// admin API's); a user token or certificate 403. The exposition never holds a
// token and passes the strict exposition check (test/tools/promlint).
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t, { type Test } from "tap";
import { value } from "../../../../test/tools/exposition.js";
import { lintExposition } from "../../../../test/tools/go-tool.js";
import { ensureAdminCredential } from "../../src/admin/admin-credential.js";
import { runCliCaptured } from "../../src/cli/cli.js";
import { MIN_SCRAPE_TOKEN_LENGTH, readScrapeToken } from "../../src/http/read-access.js";
import { createLogger } from "../../src/logger.js";
import { hashToken, issueToken } from "../../src/pki/tokens.js";
import { type ServerOptions, TetherServer } from "../../src/server.js";
import { FileStore } from "../../src/store/file-store.js";

const SCRAPE_TOKEN = "scrape-4d1b0c8e9f2a7b6c5d4e3f2a1b0c9d8e";

async function startServer(t: Test, options: Partial<ServerOptions> = {}) {
  const dir = await mkdtemp(join(tmpdir(), "tether-read-access-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const store = await FileStore.open(join(dir, "state"));
  const server = await TetherServer.start({
    store,
    host: "127.0.0.1",
    port: 0,
    log: createLogger({ level: "silent" }),
    metricsToken: SCRAPE_TOKEN,
    ...options,
  });
  t.teardown(() => server.close());
  const admin = await ensureAdminCredential(store, server.url, server.ca.certPem);
  const user = issueToken();
  await store.addToken({
    hash: user.hash,
    kind: "user",
    user: "alice",
    groups: [],
    clusters: ["*"],
    expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  });
  return { dir, store, server, adminToken: admin.token, userToken: user.token };
}

function get(
  server: TetherServer,
  options: { authorization?: string; cert?: { certPem: string; keyPem?: string }; method?: string } = {},
): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${server.url}/metrics`,
      {
        method: options.method ?? "GET",
        ca: server.ca.certPem,
        ...(options.cert ? { cert: options.cert.certPem, key: options.cert.keyPem ?? "" } : {}),
        headers: options.authorization ? { authorization: options.authorization } : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            type: String(res.headers["content-type"]),
            body: Buffer.concat(chunks).toString("utf8"),
          }),
        );
      },
    );
    req.on("error", reject);
    req.end();
  });
}

t.test("who may read /metrics", async (t) => {
  const { server, adminToken, userToken } = await startServer(t);
  const none = await get(server);
  t.equal(none.status, 401, "no credential");
  t.match(JSON.parse(none.body), { kind: "Status", code: 401, reason: "Unauthorized" });
  t.equal((await get(server, { authorization: "Bearer tether_wrong" })).status, 401, "an unknown token");
  t.equal((await get(server, { authorization: `Basic ${SCRAPE_TOKEN}` })).status, 401, "not a bearer token");
  t.equal(
    (await get(server, { authorization: `Bearer ${SCRAPE_TOKEN.slice(0, -1)}x` })).status,
    401,
    "the scrape token with one character changed",
  );
  const user = await get(server, { authorization: `Bearer ${userToken}` });
  t.equal(user.status, 403, "a user token is no reader");
  t.match(JSON.parse(user.body), { kind: "Status", code: 403, reason: "Forbidden" });
  const cert = await server.ca.issueUserCertificate("alice", ["ops"]);
  t.equal((await get(server, { cert })).status, 403, "a user certificate is no reader");
  const admin = await get(server, { authorization: `Bearer ${adminToken}` });
  t.equal(admin.status, 200, "the admin token");
  const scrape = await get(server, { authorization: `Bearer ${SCRAPE_TOKEN}` });
  t.equal(scrape.status, 200, "the scrape token");
  t.match(scrape.type, /^text\/plain; version=0\.0\.4/);
  t.equal((await get(server, { authorization: `Bearer ${SCRAPE_TOKEN}`, method: "POST" })).status, 400);

  for (const secret of [SCRAPE_TOKEN, adminToken, userToken, hashToken(userToken)]) {
    t.notOk(scrape.body.includes(secret), "the exposition holds no token or token hash");
  }
  t.equal(
    value(scrape.body, "tether_authentication_failures_total", {
      endpoint: "metrics",
      reason: "invalid_credential",
    }),
    4,
    "each 401 was a failed authentication",
  );
  t.equal(
    value(scrape.body, "tether_store_operation_duration_seconds_count", { operation: "findToken" }),
    2,
    "the user's and the admin's token look-ups went through the instrumented store",
  );
  const lint = await lintExposition(scrape.body);
  t.ok(lint.ok, `promlint and expfmt: ${lint.output}`);
});

t.test("failed reads count against the source's allowance", async (t) => {
  const { server } = await startServer(t, { limits: { authFailureLimit: 3 } });
  for (let i = 0; i < 3; i++) t.equal((await get(server)).status, 401);
  const limited = await get(server, { authorization: `Bearer ${SCRAPE_TOKEN}` });
  t.equal(limited.status, 429, "then even the right token waits");
});

t.test("--no-metrics: no collection, readers get 404", async (t) => {
  const { server, adminToken } = await startServer(t, { metrics: false });
  t.equal(server.metrics, undefined);
  t.equal((await get(server)).status, 401, "still no answer without a credential");
  t.equal((await get(server, { authorization: `Bearer ${adminToken}` })).status, 404);
});

t.test("the scrape token file", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "tether-scrape-token-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, "token");
  await writeFile(file, `${SCRAPE_TOKEN}\n`);
  t.equal(await readScrapeToken(file), SCRAPE_TOKEN, "trailing newline dropped");
  await writeFile(file, "short\n");
  await t.rejects(readScrapeToken(file), { code: "ERR_TETHER_METRICS_TOKEN" });
  await writeFile(file, `${"a".repeat(MIN_SCRAPE_TOKEN_LENGTH)} ${"b".repeat(MIN_SCRAPE_TOKEN_LENGTH)}`);
  await t.rejects(readScrapeToken(file), { code: "ERR_TETHER_METRICS_TOKEN" }, "one word");
  await t.rejects(readScrapeToken(join(dir, "missing")), { code: "ERR_TETHER_METRICS_TOKEN" });
  const cli = await runCliCaptured(["serve", "--state-dir", join(dir, "s"), "--metrics-token-file", file]);
  t.equal(cli.code, 1, "serve refuses to start with an unusable token file");
  t.match(cli.stderr, /ERR_TETHER_METRICS_TOKEN/);
});
