// /status on a real TetherServer (HTTPS on loopback, a FileStore): who may
// read it (the admin token as bearer or Basic password; nobody else), its
// headers (a CSP that allows nothing but its own stylesheet), that every value
// from an agent or the store is escaped, and what it says about a connected
// and a gone agent session and about the replica.
import { mkdtemp, rm } from "node:fs/promises";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AGENT_PATH, AGENT_VERSION_HEADER } from "@tether/common";
import { ResetCode, type Session, sessionFromWebSocket, WEBSOCKET_OPTIONS } from "@tether/tunnel";
import t, { type Test } from "tap";
import { WebSocket } from "ws";
import { ensureAdminCredential } from "../../src/admin/admin-credential.js";
import { createLogger } from "../../src/logger.js";
import { issueToken } from "../../src/pki/tokens.js";
import { TetherServer } from "../../src/server.js";
import { FileStore } from "../../src/store/file-store.js";

const XSS = `<script>alert("x")</script>`;

async function startServer(t: Test, limits: { authFailureLimit?: number } = {}) {
  const dir = await mkdtemp(join(tmpdir(), "tether-status-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const store = await FileStore.open(join(dir, "state"));
  const server = await TetherServer.start({
    store,
    host: "127.0.0.1",
    port: 0,
    log: createLogger({ level: "silent" }),
    sessionCheckIntervalMs: 100,
    limits,
  });
  t.teardown(() => server.close());
  const credential = await ensureAdminCredential(store, server.url, server.ca.certPem);
  return { store, server, token: credential.token };
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

function get(
  server: TetherServer,
  path: string,
  headers: Record<string, string> = {},
  method = "GET",
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(`${server.url}${path}`, { method, ca: server.ca.certPem, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          text: Buffer.concat(chunks).toString("utf8"),
        }),
      );
    });
    req.on("error", reject);
    req.end();
  });
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const basic = (user: string, token: string) => ({
  authorization: `Basic ${Buffer.from(`${user}:${token}`).toString("base64")}`,
});

/** A certificate of the current registration of `name`, recorded as the join endpoint would. */
async function clusterCert(server: TetherServer, store: FileStore, name: string) {
  const uid = (await store.getCluster(name))!.uid;
  const cert = await server.ca.issueClusterCertificate(name, { incarnation: uid });
  await store.recordIssued(cert.serial, name, cert.notAfter.toISOString());
  return { certPem: cert.certPem, keyPem: cert.keyPem!, serial: cert.serial };
}

/** A raw agent session that says it is `version`, or the HTTP status it was refused with. */
function dialAgent(
  server: TetherServer,
  cert: { certPem: string; keyPem: string },
  version: string,
): Promise<Session | number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${server.url.replace(/^https/, "wss")}${AGENT_PATH}`, {
      ...WEBSOCKET_OPTIONS,
      ca: server.ca.certPem,
      cert: cert.certPem,
      key: cert.keyPem,
      headers: { [AGENT_VERSION_HEADER]: version },
    });
    ws.once("unexpected-response", (_req, res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.once("error", reject);
    ws.once("open", () =>
      resolve(
        sessionFromWebSocket(ws, {
          keepAliveInterval: 50,
          deadPeerTimeout: 5_000,
          role: "client",
          accept: () => ResetCode.REFUSED,
        }),
      ),
    );
  });
}

async function until(what: string, cond: () => Promise<boolean> | boolean): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

t.test("only the admin token reads /status", async (t) => {
  const { store, server, token } = await startServer(t);
  const none = await get(server, "/status");
  t.equal(none.status, 401, "no credential: 401");
  t.match(
    JSON.parse(none.text),
    { kind: "Status", code: 401, reason: "Unauthorized" },
    "a Kubernetes Status",
  );
  t.notMatch(none.text, /<html/i, "not the page");
  t.match(
    String(none.headers["www-authenticate"]),
    /Basic realm="tether status"/,
    "a browser may ask for it",
  );
  t.equal(none.headers["cache-control"], "no-store");

  t.equal((await get(server, "/status", bearer(issueToken().token))).status, 401, "an unknown token: 401");
  const user = issueToken();
  await store.addToken({
    hash: user.hash,
    kind: "user",
    user: "alice",
    clusters: ["*"],
    expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  });
  t.equal((await get(server, "/status", bearer(user.token))).status, 401, "a user token: 401");
  t.equal((await get(server, "/status", basic("alice", user.token))).status, 401, "as Basic too");
  t.equal((await get(server, "/status", { authorization: "Basic %%%" })).status, 401, "garbage Basic: 401");
  t.equal((await get(server, "/status", basic("", "nocolon"))).status, 401);

  const ok = await get(server, "/status", bearer(token));
  t.equal(ok.status, 200, "the admin token as a bearer token: 200");
  t.match(ok.headers["content-type"], /^text\/html; charset=utf-8$/);
  t.match(ok.text, /^<!doctype html>/);
  t.equal((await get(server, "/status", basic("admin", token))).status, 200, "and as a Basic password");
  t.equal((await get(server, "/status", bearer(token), "POST")).status, 400, "GET and HEAD only");
  const head = await get(server, "/status", bearer(token), "HEAD");
  t.equal(head.status, 200);
  t.equal(head.text, "", "HEAD has no body");
});

t.test("failed attempts count towards the source's limit, as on the admin API", async (t) => {
  const { server, token } = await startServer(t, { authFailureLimit: 3 });
  for (let i = 0; i < 3; i++) t.equal((await get(server, "/status", bearer(issueToken().token))).status, 401);
  const limited = await get(server, "/status", bearer(token));
  t.equal(limited.status, 429, "then even the right token waits");
  t.match(JSON.parse(limited.text), { kind: "Status", reason: "TooManyRequests" });
});

t.test("headers: a CSP that allows only the page's own stylesheet", async (t) => {
  const { server, token } = await startServer(t);
  const ok = await get(server, "/status", bearer(token));
  const csp = String(ok.headers["content-security-policy"]);
  t.match(csp, /^default-src 'none'; /, "nothing by default");
  const hash = /style-src 'sha256-([A-Za-z0-9+/=]+)'/.exec(csp)?.[1];
  t.ok(hash, "style-src is one hash");
  const { createHash } = await import("node:crypto");
  const styles = [...ok.text.matchAll(/<style>([\s\S]*?)<\/style>/g)].map((m) => m[1]!);
  t.equal(styles.length, 1, "one stylesheet");
  t.equal(createHash("sha256").update(styles[0]!).digest("base64"), hash, "the hash is that stylesheet's");
  t.notMatch(ok.text, /\sstyle=/, "no inline style attributes (the CSP would block them)");
  t.notMatch(ok.text, /<script|<img|<link|src=|href=/i, "no script, image or external asset");
  t.match(ok.text, /<meta http-equiv="refresh" content="\d+">/, "it reloads itself");
  t.match(ok.text, /<meta name="viewport" content="width=device-width/, "sized for phones");
  t.equal(ok.headers["x-content-type-options"], "nosniff");
  t.equal(ok.headers["cache-control"], "no-store");
  t.match(csp, /frame-ancestors 'none'/);
});

t.test("what it shows, every value escaped", async (t) => {
  const { store, server, token } = await startServer(t);
  const record = (name: string, labels: Record<string, string>) => ({
    name,
    auth: "impersonate" as const,
    labels,
    allowedUsers: [],
    allowedGroups: [],
    createdAt: new Date().toISOString(),
  });
  // The store takes what an admin (or kubectl on the Cluster objects) put there.
  await store.putCluster(record("up", { team: XSS, [`k${XSS}`]: "v" }));
  await store.putCluster(record("down", {}));
  const cert = await clusterCert(server, store, "up");
  const session = await dialAgent(server, cert, `1.0 ${XSS}`);
  if (typeof session === "number") throw new Error(`refused with ${session}`);
  await until("the session is registered", () => server.sessions.get("up") !== undefined);
  await until("a first RTT", () => server.sessions.get("up")?.session.rtt !== undefined);

  const page = (await get(server, "/status", bearer(token))).text;
  t.notMatch(page, /<script/i, "no label or version gets in as markup");
  t.match(page, /team=&lt;script&gt;alert\(&quot;x&quot;\)&lt;\/script&gt;/, "a label value is escaped");
  t.match(page, /k&lt;script&gt;/, "a label key too");
  t.match(page, /1\.0 &lt;script&gt;alert\(&quot;x&quot;\)&lt;\/script&gt;/, "the agent's version too");
  const card = (name: string) =>
    new RegExp(`<article[^>]*data-cluster="${name}"[^>]*>([\\s\\S]*?)</article>`).exec(page)?.[0] ?? "";
  t.match(card("up"), /data-connected="true"/);
  t.match(card("up"), /data-field="state">connected</);
  t.match(card("up"), /data-field="rtt">[\d.]+ ms</, "an RTT");
  t.match(card("up"), /data-field="streams">\d+</);
  t.match(card("up"), /data-field="bytes-rate">out \d/);
  t.match(card("down"), /data-connected="false"/);
  t.match(card("down"), /data-field="state">not connected</);
  t.match(page, /data-field="store"><span class="ok">reachable/, "the store is reachable");
  t.match(page, /data-field="draining">no</);
  t.match(page, /data-field="sessions">1</);

  const json = JSON.parse((await get(server, "/status?format=json", bearer(token))).text);
  t.match(json.replica, { draining: false, sessions: 1, connectedClusters: 1, store: { reachable: true } });
  t.match(json.clusters, [
    { name: "down", connection: { connected: false } },
    { name: "up", labels: { team: XSS }, connection: { connected: true, agentVersion: `1.0 ${XSS}` } },
  ]);
  t.type(json.clusters[1].connection.rttMs, "number");

  // The certificate is revoked: the session is cut, then its reconnect refused; each leaves a last error.
  await store.revokeCluster("up");
  await until("the session is closed", () => session.closed);
  const closed = JSON.parse((await get(server, "/status?format=json", bearer(token))).text);
  t.match(closed.clusters[1], {
    name: "up",
    connection: { connected: false },
    disconnectedAt: /^\d{4}-/,
    lastError: { message: "session closed: its certificate was revoked" },
  });
  let html = (await get(server, "/status", bearer(token))).text;
  t.match(html, /data-field="last-error">session closed: its certificate was revoked/);
  t.match(html, /data-field="disconnected-at"><time/);
  t.equal(await dialAgent(server, cert, "1.0"), 403, "the revoked certificate is refused");
  const after = JSON.parse((await get(server, "/status?format=json", bearer(token))).text);
  t.match(after.clusters[1].lastError, { message: /^agent refused: the certificate .* has been revoked/ });
  html = (await get(server, "/status", bearer(token))).text;
  t.match(
    html,
    /data-field="last-error">agent refused: the certificate of cluster &quot;up&quot; has been revoked/,
  );
});

t.test("without a reachable store the page still answers, with what the replica knows", async (t) => {
  const { store, server, token } = await startServer(t);
  const listClusters = store.listClusters.bind(store);
  store.listClusters = async () => {
    throw new Error("the store is away");
  };
  t.teardown(() => {
    store.listClusters = listClusters;
  });
  const json = JSON.parse((await get(server, "/status?format=json", bearer(token))).text);
  t.match(json.replica.store, { reachable: false, error: "the store is away" });
  const page = await get(server, "/status", bearer(token));
  t.equal(page.status, 200);
  t.match(page.text, /data-field="store"><span class="bad">unreachable/);
});
