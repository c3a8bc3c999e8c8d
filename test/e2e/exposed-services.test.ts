// Issue 17 part 3: an in-cluster service exposed by the agent (--expose),
// reached through Tether at /clusters/<c>/services/<name>/ and in the host
// form, by the users listed for it and nobody else. The "in-cluster service"
// is a loopback HTTP server this test starts, behind a real agent in front of
// the real harness apiserver; a second loopback server stands for everything
// else on the member's network and must never be reached, whatever the
// caller tries (Host header, absolute form, dot segments however encoded,
// CONNECT, a redirect, an upgrade).
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { createServer, type IncomingMessage, type Server } from "node:http";
import { request } from "node:https";
import { connect as tlsConnect } from "node:tls";
import { parseExpose } from "@tether/agent";
import { AuditLog, issueToken } from "@tether/server";
import t from "tap";
import { startClusters } from "../kube/index.js";
import { bindTetherAdmins, startTether, TEST_CLUSTER_DOMAIN } from "./fixture.js";
import { heldRequest, rawRequest, upgrade } from "./raw-client.js";

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  rawHeaders: string[];
}

async function listen(server: Server): Promise<number> {
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return (server.address() as { port: number }).port;
}

// Everything else on the member's network: nothing may reach it.
const elsewhereHits: string[] = [];
const elsewhere = createServer((req, res) => {
  elsewhereHits.push(`${req.method} ${req.url}`);
  res.end("secret");
});
const elsewherePort = await listen(elsewhere);
t.teardown(() => elsewhere.close());

const seen: Seen[] = [];
let releaseStream: () => void = () => {};
const held: (() => void)[] = [];
const service = createServer((req, res) => {
  seen.push({
    method: req.method ?? "",
    url: req.url ?? "",
    headers: req.headers,
    rawHeaders: req.rawHeaders,
  });
  if (req.url === "/base/redirect") {
    res.writeHead(302, { location: `http://127.0.0.1:${elsewherePort}/secret` }).end();
    return;
  }
  if (req.url === "/base/hold") {
    // Held until the test lets go: a caller's open requests.
    res.writeHead(200, { "content-type": "text/plain" });
    res.write("held\n");
    held.push(() => res.end());
    return;
  }
  if (req.url === "/base/stream") {
    // The second chunk waits for the test to have read the first: the response is streamed, not buffered.
    res.writeHead(200, { "content-type": "text/event-stream" });
    res.write("data: one\n\n");
    releaseStream = () => res.end("data: two\n\n");
    return;
  }
  const hash = createHash("sha256");
  let length = 0;
  req.on("data", (c: Buffer) => {
    hash.update(c);
    length += c.length;
  });
  req.on("end", () => {
    res.writeHead(200, { "content-type": "application/json", "set-cookie": "planted=1" });
    res.end(JSON.stringify({ method: req.method, url: req.url, length, sha256: hash.digest("hex") }));
  });
});
const servicePort = await listen(service);
t.teardown(() => service.close());

const set = await startClusters(1);
t.teardown(() => set.stop());
const member = set.clusters[0]!;
const auditLines: Record<string, unknown>[] = [];
const audit = new AuditLog({
  write: (line) => auditLines.push(JSON.parse(line) as Record<string, unknown>),
  reopen() {},
  close: async () => {},
});
const MAX_PER_CALLER = 3;
const tether = await startTether(
  { clusterDomain: TEST_CLUSTER_DOMAIN, audit, limits: { maxStreamsPerCaller: MAX_PER_CALLER } },
  "path",
);
t.teardown(() => tether.stop());
const { store } = tether;
await tether.registerCluster("m1");
await tether.registerCluster("m2");
const m1 = (await store.getCluster("m1"))!;
await store.putCluster({
  ...m1,
  services: {
    web: { allowedUsers: ["alice"], allowedGroups: ["sre"] },
    // Allowed here, but the agent was not told to expose it.
    "not-exposed": { allowedUsers: ["alice"], allowedGroups: [] },
  },
});
await tether.startAgent("m1", member, {
  expose: [parseExpose(`web=http://127.0.0.1:${servicePort}/base`)],
});
const target = { url: tether.server.url, caPem: tether.ca.certPem };

async function tokenFor(user: string, groups: string[] = [], clusters = ["m1"]): Promise<string> {
  const { token, hash } = issueToken();
  await store.addToken({
    hash,
    kind: "user",
    user,
    groups,
    clusters,
    expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  });
  return token;
}
const alice = await tokenFor("alice", ["devs", "ops"]);
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** Raw bytes on a TLS connection to the server; everything answered until it closes (or `limitMs`, a liveness bound). */
async function raw(text: string, servername = "localhost", limitMs = 10_000): Promise<string> {
  const socket = tlsConnect({
    host: "127.0.0.1",
    port: Number(new URL(target.url).port),
    ca: target.caPem,
    servername,
  });
  socket.on("error", () => {});
  await once(socket, "secureConnect");
  socket.write(text);
  let answer = "";
  socket.setEncoding("utf8");
  socket.on("data", (c: string) => {
    answer += c;
    // One whole response is all a test reads: a kept-alive connection would wait for the limit.
    const end = answer.indexOf("\r\n\r\n");
    if (end < 0) return;
    const head = answer.slice(0, end);
    const length = /content-length: *(\d+)/i.exec(head);
    const done = length
      ? answer.length >= end + 4 + Number(length[1])
      : /transfer-encoding: *chunked/i.test(head)
        ? answer.endsWith("0\r\n\r\n")
        : false;
    if (done) socket.destroy();
  });
  const timer = setTimeout(() => socket.destroy(), limitMs);
  await once(socket, "close");
  clearTimeout(timer);
  return answer;
}

t.test("an allowed user reaches the service: GET, identity headers, no caller credentials", async (t) => {
  seen.length = 0;
  const res = await rawRequest(target, "/clusters/m1/services/web/hello?x=1", {
    headers: {
      ...bearer(alice),
      host: `127.0.0.1:${elsewherePort}`,
      cookie: "tether-session=secret",
      "x-tether-user": "root",
      "x-tether-group": "admins",
      "x-tether-cluster": "m2",
      "impersonate-user": "system:admin",
    },
  });
  t.equal(res.status, 200, res.body);
  t.match(JSON.parse(res.body), { method: "GET", url: "/base/hello?x=1" });
  t.equal(res.headers["set-cookie"], undefined, "the service's cookies stay off Tether's origin");
  const got = seen[0]!;
  t.equal(got.headers.host, `127.0.0.1:${servicePort}`, "the configured host, not the caller's Host");
  t.equal(got.headers["x-tether-user"], "alice", "the caller's forged identity is replaced");
  t.same(
    got.rawHeaders.filter((_, i, a) => i % 2 === 1 && a[i - 1]!.toLowerCase() === "x-tether-group"),
    ["devs", "ops"],
    "one X-Tether-Group per group, none of the caller's",
  );
  t.equal(got.headers["x-tether-cluster"], "m1");
  t.equal(got.headers.authorization, undefined, "the caller's Tether token never reaches the service");
  const line = auditLines.find((l) => typeof l.path === "string" && l.path.includes("/services/web/hello"));
  t.match(
    line,
    { kind: "request", cluster: "m1", service: "web", user: "alice", code: 200 },
    "the audit line names the service",
  );
  t.equal(got.headers.cookie, undefined);
  t.equal(got.headers["impersonate-user"], undefined);
  t.equal(elsewhereHits.length, 0);
});

t.test("a caller without groups cannot forge one", async (t) => {
  seen.length = 0;
  const dave = await tokenFor("dave");
  await store.putCluster({
    ...(await store.getCluster("m1"))!,
    services: {
      web: { allowedUsers: ["alice", "dave"], allowedGroups: ["sre"] },
      "not-exposed": { allowedUsers: ["alice"], allowedGroups: [] },
    },
  });
  const res = await rawRequest(target, "/clusters/m1/services/web/", {
    headers: { ...bearer(dave), "X-Tether-Group": "admins", "X-Tether-User": "alice" },
  });
  t.equal(res.status, 200, res.body);
  t.equal(seen[0]?.headers["x-tether-user"], "dave");
  t.equal(seen[0]?.headers["x-tether-group"], undefined, "no group header at all");
});

t.test("POST with a body, and a group member", async (t) => {
  const body = randomBytes(256 * 1024).toString("base64");
  const sre = await tokenFor("carol", ["sre"]);
  const res = await rawRequest(target, "/clusters/m1/services/web/upload", {
    method: "POST",
    headers: { ...bearer(sre), "content-type": "text/plain" },
    body,
  });
  t.equal(res.status, 200, res.body);
  t.same(JSON.parse(res.body), {
    method: "POST",
    url: "/base/upload",
    length: body.length,
    sha256: createHash("sha256").update(body).digest("hex"),
  });
});

t.test("a streamed response arrives as the service sends it", async (t) => {
  const first = new Promise<string>((resolve, reject) => {
    const req = request(
      `${target.url}/clusters/m1/services/web/stream`,
      { ca: target.caPem, agent: false, headers: bearer(alice) },
      (res) => {
        t.equal(res.statusCode, 200);
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          text += c;
          // Only once the first event is here does the service send the second.
          if (text === "data: one\n\n") releaseStream();
        });
        res.on("end", () => resolve(text));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end();
  });
  t.equal(await first, "data: one\n\ndata: two\n\n");
});

t.test("the host form reaches the same service", async (t) => {
  const answer = await raw(
    `GET /services/web/host-form HTTP/1.1\r\nHost: m1.${TEST_CLUSTER_DOMAIN}\r\nAuthorization: Bearer ${alice}\r\nConnection: close\r\n\r\n`,
    `m1.${TEST_CLUSTER_DOMAIN}`,
  );
  t.match(answer, /^HTTP\/1\.1 200/);
  t.match(answer, /"url":"\/base\/host-form"/);
});

t.test("callers not listed for the service are refused", async (t) => {
  seen.length = 0;
  const bob = await tokenFor("bob", ["devs"]);
  const refused = await rawRequest(target, "/clusters/m1/services/web/", { headers: bearer(bob) });
  t.equal(refused.status, 403);
  t.ok(
    auditLines.some((l) => l.service === "web" && l.user === "bob" && l.reason === "Forbidden"),
    "the refusal is audited",
  );
  t.match(JSON.parse(refused.body), {
    kind: "Status",
    message: 'user "bob" may not use service "web" of cluster "m1" through Tether',
  });
  const outOfScope = await tokenFor("alice", ["sre"], ["m2"]);
  t.equal(
    (await rawRequest(target, "/clusters/m1/services/web/", { headers: bearer(outOfScope) })).status,
    403,
  );
  const anonymous = await rawRequest(target, "/clusters/m1/services/web/");
  t.equal(anonymous.status, 401);
  t.match(anonymous.body, /needs a Tether token or a Tether client certificate/);
  const unlisted = await rawRequest(target, "/clusters/m1/services/nope/", { headers: bearer(alice) });
  t.equal(unlisted.status, 403, "a service nobody was allowed is usable by nobody");
  t.equal(seen.filter((s) => s.url === "/base/").length, 0, "none of them reached the service");
});

t.test("on a passthrough cluster too, only Tether's own credentials reach a service", async (t) => {
  const record = (await store.getCluster("m1"))!;
  await store.putCluster({ ...record, auth: "passthrough" });
  t.teardown(() => store.putCluster(record));
  const memberToken = await rawRequest(target, "/clusters/m1/services/web/", {
    headers: { authorization: "Bearer some-member-service-account-token" },
  });
  t.equal(memberToken.status, 401, "a member's token means nothing to a service");
  const own = await rawRequest(target, "/clusters/m1/services/web/", { headers: bearer(alice) });
  t.equal(own.status, 200, own.body);
});

t.test("a service the agent does not expose: the agent refuses the stream, the caller is told", async (t) => {
  const res = await rawRequest(target, "/clusters/m1/services/not-exposed/", { headers: bearer(alice) });
  t.equal(res.status, 502);
  t.match(
    JSON.parse(res.body).message,
    /refused service "not-exposed": it does not expose it \(start the agent with --expose not-exposed=URL\)/,
  );
});

t.test("SSRF: nothing but the configured host and port under the base path is reachable", async (t) => {
  seen.length = 0;
  const auth = `Authorization: Bearer ${alice}\r\n`;
  const plain = (target: string, host = "localhost") =>
    raw(`GET ${target} HTTP/1.1\r\nHost: ${host}\r\n${auth}Connection: close\r\n\r\n`);
  for (const path of [
    "/clusters/m1/services/web/../../secret",
    "/clusters/m1/services/web/%2e%2e/secret",
    "/clusters/m1/services/web/%2E%2e/%2e%2E/secret",
    "/clusters/m1/services/web/..%2fsecret",
    "/clusters/m1/services/web/%252e%252e/secret",
    "/clusters/m1/services/web/..\\secret",
  ]) {
    const answer = await plain(path);
    t.match(answer, /^HTTP\/1\.1 400/, path);
    t.match(answer, /may not contain \. or \.\. segments/);
  }
  t.equal(seen.length, 0, "no dot-segment request reached the service");
  // Absolute form, naming the other server: not a path on tether-server at all.
  const absolute = await plain(`http://127.0.0.1:${elsewherePort}/clusters/m1/services/web/`);
  t.match(absolute, /^HTTP\/1\.1 404/);
  // Absolute form on a member's host name: refused by host routing.
  const hostAbsolute = await raw(
    `GET http://127.0.0.1:${elsewherePort}/services/web/ HTTP/1.1\r\nHost: m1.${TEST_CLUSTER_DOMAIN}\r\n${auth}Connection: close\r\n\r\n`,
    `m1.${TEST_CLUSTER_DOMAIN}`,
  );
  t.match(hostAbsolute, /^HTTP\/1\.1 400/);
  // A Host header naming the other server changes nothing.
  const hosted = await plain("/clusters/m1/services/web/via-host", `127.0.0.1:${elsewherePort}`);
  t.match(hosted, /^HTTP\/1\.1 200/);
  t.equal(seen.at(-1)?.headers.host, `127.0.0.1:${servicePort}`);
  // CONNECT to the other server: tether-server tunnels nothing.
  const tunnelled = await raw(
    `CONNECT 127.0.0.1:${elsewherePort} HTTP/1.1\r\nHost: 127.0.0.1:${elsewherePort}\r\n${auth}\r\n`,
  );
  t.notMatch(tunnelled, /^HTTP\/1\.1 200/, `CONNECT answered: ${JSON.stringify(tunnelled.slice(0, 40))}`);
  const connectPath = await raw(
    `CONNECT /clusters/m1/services/web/ HTTP/1.1\r\nHost: localhost\r\n${auth}\r\n`,
  );
  t.notMatch(connectPath, /^HTTP\/1\.1 200/);
  // A redirect to the other server is relayed to the caller, not followed.
  const redirect = await rawRequest(target, "/clusters/m1/services/web/redirect", { headers: bearer(alice) });
  t.equal(redirect.status, 302);
  t.equal(redirect.headers.location, `http://127.0.0.1:${elsewherePort}/secret`);
  // An upgrade is refused before anything is opened.
  const up = await upgrade(target, "/clusters/m1/services/web/ws", alice);
  t.equal(up.status, 400);
  t.match(up.body, /upgrades \(WebSocket, SPDY\) are refused/);
  up.socket.destroy();
  t.same(elsewhereHits, [], "the other server was never reached");
});

t.test("a caller's open requests to services count against its per-cluster quota", async (t) => {
  const erin = await tokenFor("erin", ["sre"]);
  const open = [];
  for (let i = 0; i < MAX_PER_CALLER; i++) {
    const h = await heldRequest(target, "/clusters/m1/services/web/hold", erin);
    t.equal(h.status, 200);
    open.push(h);
  }
  const over = await rawRequest(target, "/clusters/m1/services/web/", { headers: bearer(erin) });
  t.equal(over.status, 429);
  t.match(JSON.parse(over.body).message, /you hold 3 requests and connections on cluster "m1" already/);
  for (const release of held.splice(0)) release();
  for (const h of open) await h.body;
  const after = await rawRequest(target, "/clusters/m1/services/web/", { headers: bearer(erin) });
  t.equal(after.status, 200, "the slots came back");
});

t.test("the apiserver is still served next to the services", async (t) => {
  await bindTetherAdmins(member);
  const admins = await tokenFor("alice", ["admins"]);
  const res = await rawRequest(target, "/clusters/m1/version", { headers: bearer(admins) });
  t.equal(res.status, 200, res.body);
  t.match(JSON.parse(res.body), { gitVersion: /^v1\./ });
  // Why /services/ is free for Tether: the apiserver's own root paths, as it lists them, have none under it.
  const root = await rawRequest(target, "/clusters/m1/", { headers: bearer(admins) });
  t.equal(root.status, 200, root.body);
  const paths = (JSON.parse(root.body) as { paths: string[] }).paths;
  t.ok(paths.includes("/api") && paths.includes("/version"), "the apiserver's path list");
  t.same(
    paths.filter((p) => p === "/services" || p.startsWith("/services/")),
    [],
    "the apiserver serves nothing under /services",
  );
});
