// Issue 10 items 3, 4 and 9 (logs, rate limits), as an attacker would try
// them against a real server and a real member: one user holding more
// streams than their share, a cluster's tunnel filled up, idle and
// slowloris connections, too many connections, guessing credentials from
// one address — and a legitimate caller still served through all of it.
// Limits are set small through ServerOptions; the timeouts bound liveness,
// they are not timing assertions.
import { readdirSync } from "node:fs";
import { connect as h2connect } from "node:http2";
import { connect as netConnect } from "node:net";
import { Writable } from "node:stream";
import { keyAndCsr } from "@tether/agent";
import { createLogger, issueToken } from "@tether/server";
import t, { type Test } from "tap";
import { startClusters } from "../kube/index.js";
import { bindTetherAdmins, type Fixture, startTether, TEST_TUNNEL, until } from "./fixture.js";
import {
  type HeldRequest,
  type HeldUpgrade,
  heldRequest,
  type RawTarget,
  rawRequest,
  rawTls,
  upgrade,
  whenClosed,
  wsFrame,
} from "./raw-client.js";

const set = await startClusters(1);
t.teardown(() => set.stop());
const member = set.clusters[0]!;
await bindTetherAdmins(member);
await member.createPod("default", "box");

const fds = () => readdirSync("/proc/self/fd").length;
const rssMiB = () => Math.round(process.memoryUsage().rss / 2 ** 20);
const figures = (what: string) =>
  `${what}: test process (server and agent in-process) fds ${fds()}, RSS ${rssMiB()} MiB`;

async function userToken(fx: Fixture, cluster: string, user: string): Promise<string> {
  const { token, hash } = issueToken();
  await fx.store.addToken({
    hash,
    kind: "user",
    user,
    groups: ["admins"],
    clusters: [cluster],
    expiresAt: new Date(Date.now() + 3600_000).toISOString(),
  });
  return token;
}

const target = (fx: Fixture): RawTarget => ({ url: fx.server.url, caPem: fx.ca.certPem });
const execPath = (cluster: string, extra = "") =>
  `/clusters/${cluster}/api/v1/namespaces/default/pods/box/exec?command=cat&stdin=true&stdout=true${extra}`;
const watchPath = (cluster: string) => `/clusters/${cluster}/api/v1/namespaces/default/configmaps?watch=1`;
const versionPath = (cluster: string) => `/clusters/${cluster}/version`;
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

function statusOf(body: string): { kind?: string; reason?: string; code?: number; details?: unknown } {
  try {
    return JSON.parse(body) as { kind?: string; reason?: string; code?: number };
  } catch {
    return { kind: `not JSON: ${body.slice(0, 80)}` };
  }
}

// ---- A: per-caller quota, failed-authentication limit, logs ----
const logLines: string[] = [];
const a = await startTether({
  log: createLogger(
    { level: "debug" },
    new Writable({
      write(chunk, _enc, cb) {
        logLines.push(String(chunk));
        cb();
      },
    }),
  ),
  limits: { maxStreamsPerCaller: 4, authFailureLimit: 5, authFailureWindowMs: 60_000 },
});
t.teardown(() => a.stop());
await a.registerCluster("limits-a");
await a.startAgent("limits-a", member);

t.test(
  "one user holding their share of streams gets 429 on the excess; another user is served",
  async (t) => {
    const mallory = await userToken(a, "limits-a", "mallory");
    const bob = await userToken(a, "limits-a", "bob");
    const held: (HeldRequest | HeldUpgrade)[] = [];
    t.teardown(() => {
      for (const h of held) "socket" in h ? h.socket.destroy() : h.close();
    });
    t.comment(figures("before"));
    for (let i = 0; i < 3; i++) {
      const w = await heldRequest(target(a), watchPath("limits-a"), mallory);
      t.equal(w.status, 200, `watch ${i + 1} is served`);
      held.push(w);
    }
    const exec = await upgrade(target(a), execPath("limits-a"), mallory);
    t.equal(exec.status, 101, "the 4th stream, an exec, is served");
    held.push(exec);

    const excess = await upgrade(target(a), execPath("limits-a"), mallory);
    held.push(excess);
    t.equal(excess.status, 429, "the 5th, an exec upgrade, is refused");
    t.equal(excess.headers["retry-after"], "1");
    t.match(statusOf(excess.body), { kind: "Status", reason: "TooManyRequests", code: 429 });
    if (excess.status === 429) await whenClosed(excess.socket);
    const plainHead = await heldRequest(target(a), watchPath("limits-a"), mallory);
    held.push(plainHead);
    const plain = { ...plainHead, body: plainHead.status === 429 ? await plainHead.body : "" };
    t.equal(plain.status, 429, "a plain request over the share is refused too");
    t.equal(plain.headers["retry-after"], "1");
    t.match(statusOf(plain.body), {
      kind: "Status",
      reason: "TooManyRequests",
      details: { retryAfterSeconds: 1 },
    });

    const other = await rawRequest(target(a), versionPath("limits-a"), { headers: bearer(bob) });
    t.equal(other.status, 200, "another user is served meanwhile");
    const otherExec = await upgrade(target(a), execPath("limits-a"), bob);
    t.equal(otherExec.status, 101, "and may exec");
    otherExec.socket.destroy();
    t.comment(figures("during (mallory holds 4 streams)"));

    // Closing one of hers gives the slot back.
    exec.socket.destroy();
    await until("mallory's slot freed", async () => {
      const again = await upgrade(target(a), execPath("limits-a"), mallory);
      held.push(again);
      return again.status === 101;
    });
    for (const h of held) "socket" in h ? h.socket.destroy() : h.close();
    await until("every slot freed", async () => {
      const r = await rawRequest(target(a), versionPath("limits-a"), { headers: bearer(mallory) });
      return r.status === 200;
    });
    t.comment(figures("after"));
  },
);

t.test(
  "a burst of requests with one valid token from one address is served whole; a parallel burst of guesses is not",
  async (t) => {
    // Room for the burst in the caller's share; a failure limit a fifth of it.
    const e = await startTether({ limits: { maxStreamsPerCaller: 100, authFailureLimit: 5 } });
    t.teardown(() => e.stop());
    await e.registerCluster("limits-e");
    await e.startAgent("limits-e", member);
    const bob = await userToken(e, "limits-e", "bob");
    // Five times the failure limit, all at once on one HTTP/2 connection (they arrive in one read, so every
    // one is being checked at the same moment): a controller starting its informers behind one SNAT address.
    const session = h2connect(e.server.url, { ca: e.ca.certPem });
    t.teardown(() => session.close());
    const h2get = (path: string, token: string) =>
      new Promise<number>((resolve, reject) => {
        const req = session.request({ ":path": path, authorization: `Bearer ${token}` });
        req.on("response", (h) => resolve(Number(h[":status"])));
        req.on("error", reject);
        req.resume();
        req.end();
      });
    const burst = await Promise.all(Array.from({ length: 25 }, () => h2get(versionPath("limits-e"), bob)));
    t.same(burst, Array(25).fill(200), "every request of the burst answered 200, none 429");
    const guesses = await Promise.all(
      Array.from({ length: 25 }, (_, i) =>
        rawRequest(target(e), versionPath("limits-e"), {
          headers: bearer(`tether_parallel_guess${i}`),
          localAddress: "127.0.0.6",
        }),
      ),
    );
    const checked = guesses.filter((r) => r.status === 401).length;
    t.ok(checked <= 5, `at most the limit of parallel guesses was checked (${checked} of 25; the rest 429)`);
    t.equal(checked + guesses.filter((r) => r.status === 429).length, 25, "each guess got 401 or 429");
  },
);

t.test(
  "a failed-authentication flood from one address gets 429 + Retry-After; other addresses are served",
  async (t) => {
    const bob = await userToken(a, "limits-a", "bob");
    const flood = "127.0.0.2";
    const statuses: number[] = [];
    let last: Awaited<ReturnType<typeof rawRequest>> | undefined;
    for (let i = 0; i < 8; i++) {
      last = await rawRequest(target(a), versionPath("limits-a"), {
        headers: bearer(`tether_guess${i}`),
        localAddress: flood,
      });
      statuses.push(last.status);
    }
    t.same(statuses, [401, 401, 401, 401, 401, 429, 429, 429], "5 guesses, then refused before checking");
    t.ok(Number(last!.headers["retry-after"]) >= 1, `Retry-After: ${last!.headers["retry-after"]}`);
    t.match(statusOf(last!.body), { kind: "Status", reason: "TooManyRequests", code: 429 });
    const up = await upgrade(target(a), execPath("limits-a"), "tether_guess", { localAddress: flood });
    t.equal(up.status, 429, "upgrades from that address too");
    t.ok(Number(up.headers["retry-after"]) >= 1);
    up.socket.destroy();
    const blockedValid = await rawRequest(target(a), versionPath("limits-a"), {
      headers: bearer(bob),
      localAddress: flood,
    });
    t.equal(blockedValid.status, 429, "even a valid token: the address waits (a guess must not get through)");
    const valid = await rawRequest(target(a), versionPath("limits-a"), { headers: bearer(bob) });
    t.equal(valid.status, 200, "a valid caller from another address is served");
    t.match(logLines.join(""), /too many failed authentications/, "the block is logged once");

    await t.test("admin API", async (t) => {
      const from = "127.0.0.3";
      const codes: number[] = [];
      let res: Awaited<ReturnType<typeof rawRequest>> | undefined;
      for (let i = 0; i < 7; i++) {
        res = await rawRequest(target(a), "/admin/v1/clusters", {
          headers: bearer(issueToken().token),
          localAddress: from,
        });
        codes.push(res.status);
      }
      t.same(codes, [401, 401, 401, 401, 401, 429, 429]);
      t.ok(Number(res!.headers["retry-after"]) >= 1);
      t.match(JSON.parse(res!.body), { code: "ERR_TETHER_RATE_LIMITED" }, "in the admin API's error shape");
    });

    await t.test("join endpoint: guessing join tokens", async (t) => {
      const from = "127.0.0.4";
      const { csrPem } = await keyAndCsr("limits-a");
      const codes: number[] = [];
      let res: Awaited<ReturnType<typeof rawRequest>> | undefined;
      for (let i = 0; i < 7; i++) {
        res = await rawRequest(target(a), "/join/v1/certificate", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ cluster: "limits-a", token: issueToken().token, csr: csrPem }),
          localAddress: from,
        });
        codes.push(res.status);
      }
      t.same(codes, [401, 401, 401, 401, 401, 429, 429]);
      t.ok(Number(res!.headers["retry-after"]) >= 1);
      t.match(statusOf(res!.body), { kind: "Status", reason: "TooManyRequests" });
    });
  },
);

t.test("refused URLs are logged by path, never with their query string", async (t) => {
  const from = "127.0.0.5";
  const before = logLines.length;
  const r1 = await rawRequest(target(a), "/clusters/nope/api?access_token=supersecret1", {
    localAddress: from,
  });
  t.equal(r1.status, 404);
  const r2 = await rawRequest(target(a), "/clusters/limits-a/api?access_token=supersecret2", {
    localAddress: from,
  });
  t.equal(r2.status, 401);
  const up = await upgrade(target(a), execPath("limits-a", "&access_token=supersecret3"), undefined, {
    localAddress: from,
  });
  t.equal(up.status, 401);
  up.socket.destroy();
  const logged = logLines.slice(before).join("");
  t.match(logged, /"path":"\/clusters\/limits-a\/api"/, "the refusal names the path");
  t.match(logged, /refused upgrade/);
  t.notMatch(logged, /supersecret/, "no query string in the log");
  t.notMatch(logLines.join(""), /supersecret/);
});

// ---- B: the cluster's tunnel session full ----
const b = await startTether({
  tunnel: { ...TEST_TUNNEL, maxStreams: 6 },
  limits: { maxStreamsPerCaller: 100 },
});
t.teardown(() => b.stop());
await b.registerCluster("limits-b");
await b.startAgent("limits-b", member);

t.test(
  "a full tunnel session answers 503 + Retry-After as a Status, on plain requests and upgrades",
  async (t) => {
    const carol = await userToken(b, "limits-b", "carol");
    const held: HeldRequest[] = [];
    t.teardown(() => {
      for (const h of held) h.close();
    });
    t.comment(figures("before"));
    let refused: HeldRequest | undefined;
    for (let i = 0; i < 12 && !refused; i++) {
      const w = await heldRequest(target(b), watchPath("limits-b"), carol);
      held.push(w);
      if (w.status !== 200) refused = w;
    }
    t.ok(held.length > 1, `${held.length - 1} watches filled the session`);
    t.equal(refused?.status, 503, "the request that finds the session full gets 503");
    t.equal(refused?.headers["retry-after"], "1");
    t.match(statusOf(await refused!.body), { kind: "Status", reason: "ServiceUnavailable", code: 503 });

    const up = await upgrade(target(b), execPath("limits-b"), carol);
    t.equal(up.status, 503, "an exec on the full session gets a Status, not a dropped connection");
    t.equal(up.headers["retry-after"], "1");
    t.match(statusOf(up.body), { kind: "Status", reason: "ServiceUnavailable" });
    if (up.status === 503) await whenClosed(up.socket);
    t.comment(figures("during (session full)"));

    for (const h of held) h.close();
    await until("the session has room again", async () => {
      const r = await rawRequest(target(b), versionPath("limits-b"), { headers: bearer(carol) });
      return r.status === 200;
    });
    const exec = await upgrade(target(b), execPath("limits-b"), carol);
    t.equal(exec.status, 101, "exec works again");
    exec.socket.destroy();
    t.comment(figures("after"));
  },
);

// ---- C: connection timeouts and the connection limit ----
const c = await startTether({
  limits: {
    streamIdleTimeoutMs: 2_000,
    headersTimeoutMs: 1_000,
    idleTimeoutMs: 1_500,
    tlsHandshakeTimeoutMs: 1_000,
    maxConnections: 8,
  },
});
t.teardown(() => c.stop());
await c.registerCluster("limits-c");
await c.startAgent("limits-c", member);
const dave = await userToken(c, "limits-c", "dave");
const stillServing = async (t: Test) => {
  const r = await rawRequest(target(c), versionPath("limits-c"), { headers: bearer(dave) });
  t.equal(r.status, 200, "the server still serves a legitimate caller");
};

t.test("an idle exec is closed after --stream-idle-timeout; an active one is not", async (t) => {
  const idle = await upgrade(target(c), execPath("limits-c"), dave);
  t.equal(idle.status, 101);
  const active = await upgrade(target(c), execPath("limits-c"), dave);
  t.equal(active.status, 101);
  let echoed = 0;
  active.socket.on("data", (d: Buffer) => {
    echoed += d.length;
  });
  // stdin (channel 0) every 250 ms for 5 s; cat echoes it on stdout.
  for (let i = 0; i < 20; i++) {
    active.socket.write(wsFrame(Buffer.from([0, ...Buffer.from(`ping ${i}\n`)])));
    await new Promise((r) => setTimeout(r, 250));
  }
  await until("the idle exec closed", () => idle.socket.destroyed, 20_000);
  t.pass("the idle exec was closed");
  t.notOk(active.socket.destroyed, "the exec with traffic is still open");
  t.ok(echoed > 0, "and its output arrived");
  await until("the active exec closed once idle", () => active.socket.destroyed, 20_000);
  await stillServing(t);
});

t.test("a quiet watch outlives the headers and idle timeouts (a request is in flight)", async (t) => {
  const w = await heldRequest(target(c), watchPath("limits-c"), dave);
  t.equal(w.status, 200);
  t.teardown(() => w.close());
  // Three idle timeouts of silence, then an event must still arrive on it.
  await new Promise((r) => setTimeout(r, 4_500));
  const name = `late-${Date.now()}`;
  await member.api("POST", "/api/v1/namespaces/default/configmaps", { metadata: { name } });
  t.teardown(() => member.api("DELETE", `/api/v1/namespaces/default/configmaps/${name}`, undefined, [404]));
  await until("the watch delivers the event", () => w.received().includes(name));
  t.pass("the watch was still open and delivered the event");
});

for (const [what, head] of [
  ["a request", "GET /healthz HTTP/1.1\r\nHost: localhost\r\n"],
  [
    "the agent endpoint's upgrade request",
    "GET /agent/v1/connect HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n",
  ],
] as const) {
  t.test(`slowloris: ${what} head dribbled for ever is cut off`, async (t) => {
    const socket = await rawTls(target(c));
    socket.on("error", () => {});
    let reply = "";
    socket.on("data", (d: Buffer) => {
      reply += d.toString();
    });
    socket.write(head);
    const timer = setInterval(() => socket.write("X-Dribble: y\r\n"), 200);
    t.teardown(() => clearInterval(timer));
    await until("the dribbling connection closed", () => socket.destroyed, 20_000);
    clearInterval(timer);
    t.match(reply, /^HTTP\/1\.1 408/, "answered 408 Request Timeout");
    await stillServing(t);
  });
}

t.test("a TLS connection that never sends a request is closed", async (t) => {
  const socket = await rawTls(target(c));
  socket.on("error", () => {});
  // Reading, as any client does: the server's 408 and close are only seen by one that reads.
  socket.resume();
  await until("the idle TLS connection closed", () => socket.destroyed, 20_000);
  t.pass("closed");
  await stillServing(t);
});

t.test("a TCP connection that never finishes the TLS handshake is closed", async (t) => {
  const port = Number(new URL(c.server.url).port);
  const silent = netConnect(port, "127.0.0.1");
  // A TLS record header and nothing more: a ClientHello that never comes.
  const partial = netConnect(port, "127.0.0.1", () =>
    partial.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00])),
  );
  for (const s of [silent, partial]) s.on("error", () => {});
  await until("the silent TCP connection closed", () => silent.destroyed || silent.readableEnded, 20_000);
  await until("the half-handshake closed", () => partial.destroyed || partial.readableEnded, 20_000);
  t.pass("both closed");
  silent.destroy();
  partial.destroy();
  await stillServing(t);
});

// Not a regression test (Node closed these after 5 s before): --idle-timeout now sets that time.
t.test("a kept-alive connection idle after its response is closed", async (t) => {
  const socket = await rawTls(target(c));
  socket.on("error", () => {});
  let reply = "";
  socket.on("data", (d: Buffer) => {
    reply += d.toString();
  });
  socket.write("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
  await until("the idle kept-alive connection closed", () => socket.destroyed, 20_000);
  t.match(reply, /^HTTP\/1\.1 200/, "it was served first");
});

t.test(
  "--max-connections: the excess connection is refused; the server serves once they leave",
  async (t) => {
    // The agent's tunnel is one connection; 7 held watches make 8.
    const held: HeldRequest[] = [];
    t.teardown(() => {
      for (const h of held) h.close();
    });
    t.comment(figures("before"));
    for (let i = 0; i < 7; i++) {
      const w = await heldRequest(target(c), watchPath("limits-c"), dave);
      t.equal(w.status, 200);
      held.push(w);
    }
    const refused = await rawTls(target(c)).then(
      (s) => {
        s.destroy();
        return false;
      },
      () => true,
    );
    t.ok(refused, "the 9th connection is closed before its handshake");
    t.comment(figures("during (8 connections)"));
    for (const h of held) h.close();
    await until("the server serves again", async () => {
      try {
        return (
          (await rawRequest(target(c), versionPath("limits-c"), { headers: bearer(dave) })).status === 200
        );
      } catch {
        return false;
      }
    });
    t.pass("served after the hostile connections left");
    t.comment(figures("after"));
  },
);

// ---- D: per-source connections, the request timeout, pipelined requests ----
const d = await startTether({
  limits: {
    maxConnectionsPerSource: 3,
    requestTimeoutMs: 2_000,
    headersTimeoutMs: 1_000,
    maxStreamsPerCaller: 2,
  },
});
t.teardown(() => d.stop());
await d.registerCluster("limits-d");
await d.startAgent("limits-d", member);
const erin = await userToken(d, "limits-d", "erin");

t.test("one source address holds at most --max-connections-per-source; others are served", async (t) => {
  const held: Awaited<ReturnType<typeof rawTls>>[] = [];
  for (let i = 0; i < 3; i++) held.push(await rawTls(target(d), "127.0.0.2"));
  t.teardown(() => {
    for (const s of held) s.destroy();
  });
  const refused = await rawTls(target(d), "127.0.0.2").then(
    (s) => {
      s.destroy();
      return false;
    },
    () => true,
  );
  t.ok(refused, "the 4th connection from 127.0.0.2 is closed before its handshake");
  const other = await rawRequest(target(d), versionPath("limits-d"), { headers: bearer(erin) });
  t.equal(other.status, 200, "a caller from 127.0.0.1 is served meanwhile");
  for (const s of held) s.destroy();
  await until("127.0.0.2 may connect again", async () => {
    try {
      (await rawTls(target(d), "127.0.0.2")).destroy();
      return true;
    } catch {
      return false;
    }
  });
});

t.test("a request body trickled for ever gets 408; a quiet watch outlives --request-timeout", async (t) => {
  const socket = await rawTls(target(d));
  socket.on("error", () => {});
  let reply = "";
  socket.on("data", (b: Buffer) => {
    reply += b.toString("utf8");
  });
  socket.write(
    `POST /clusters/limits-d/api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${erin}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{`,
  );
  const trickle = setInterval(() => socket.write(" "), 300);
  t.teardown(() => clearInterval(trickle));
  await until("the trickling connection is closed", () => socket.destroyed, 20_000);
  clearInterval(trickle);
  t.match(reply, /^HTTP\/1\.1 408/, "answered 408 Request Timeout");

  const w = await heldRequest(target(d), watchPath("limits-d"), erin);
  t.equal(w.status, 200);
  t.teardown(() => w.close());
  await new Promise((r) => setTimeout(r, 3_000));
  const name = `after-request-timeout-${Date.now()}`;
  await member.api("POST", "/api/v1/namespaces/default/configmaps", { metadata: { name } });
  t.teardown(() => member.api("DELETE", `/api/v1/namespaces/default/configmaps/${name}`, undefined, [404]));
  await until("the watch delivers the event", () => w.received().includes(name));
  t.pass("the watch outlived the request timeout and delivered the event");
});

t.test("pipelined requests cut off mid-queue give their quota slots back", async (t) => {
  for (let round = 0; round < 3; round++) {
    const socket = await rawTls(target(d));
    socket.on("error", () => {});
    const watch = `GET ${watchPath("limits-d")} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${erin}\r\n\r\n`;
    socket.write(watch.repeat(3));
    await new Promise((r) => setTimeout(r, 500));
    socket.destroy();
  }
  await until("erin's two slots are free again", async () => {
    const a1 = await heldRequest(target(d), watchPath("limits-d"), erin);
    const a2 = await heldRequest(target(d), watchPath("limits-d"), erin);
    a1.close();
    a2.close();
    return a1.status === 200 && a2.status === 200;
  });
  t.pass("the share is whole again once the connections are gone");
});
