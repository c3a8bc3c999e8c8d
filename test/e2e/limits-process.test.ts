// Issue 10 item 4, with the server as its own process: the `serve` limit
// flags take effect, and hundreds of slowloris, idle-TLS and never-
// handshaking connections plus a failed-authentication flood leave the
// server's file descriptors where they started. Memory and descriptors are
// read from /proc/<pid> and reported; only the descriptors are asserted
// (they are exact), memory figures are for the report.
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { connect as netConnect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import { FileStore, issueToken } from "@tether/server";
import t from "tap";
import { until } from "./fixture.js";
import { type RawTarget, rawRequest, rawTls } from "./raw-client.js";
import { spawnServer } from "./tether-processes.js";

const dir = await mkdtemp(join(tmpdir(), "tether-limits-"));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const stateDir = join(dir, "state");
const caPem = (await (await FileStore.open(stateDir)).loadOrCreateCa()).certPem;
const { proc, url } = await spawnServer(stateDir, caPem, join(dir, "server.log"), undefined, [
  "--headers-timeout",
  "2s",
  "--idle-timeout",
  "2s",
  "--tls-handshake-timeout",
  "2s",
  "--auth-failure-limit",
  "20",
  "--auth-failure-window",
  "1m",
]);
t.teardown(() => proc.stop());
const pid = proc.pid!;
const target: RawTarget = { url, caPem };
const port = Number(new URL(url).port);

const fdCount = () => readdirSync(`/proc/${pid}/fd`).length;
const rssMiB = () => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Math.round(Number(m?.[1]) / 1024);
};
const load = () => readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");

t.test("slowloris, idle TLS and silent TCP connections are all closed; fds return to baseline", async (t) => {
  for (let i = 0; i < 5; i++) t.equal((await rawRequest(target, "/healthz")).status, 200);
  const base = { fds: fdCount(), rss: rssMiB() };
  t.comment(`before: server fds ${base.fds}, RSS ${base.rss} MiB (load ${load()})`);

  let peak = { fds: 0, rss: 0 };
  const sampler = setInterval(() => {
    peak = { fds: Math.max(peak.fds, fdCount()), rss: Math.max(peak.rss, rssMiB()) };
  }, 100);
  t.teardown(() => clearInterval(sampler));

  const sockets: (Socket | TLSSocket)[] = [];
  const dribbles: NodeJS.Timeout[] = [];
  t.teardown(() => {
    for (const d of dribbles) clearInterval(d);
    for (const s of sockets) s.destroy();
  });
  const N = 300;
  for (let batch = 0; batch < N / 50; batch++) {
    await Promise.all(
      Array.from({ length: 50 }, async () => {
        // Never handshakes.
        const silent = netConnect(port, "127.0.0.1");
        silent.on("error", () => {});
        silent.resume();
        sockets.push(silent);
        // Handshakes, then sends nothing.
        const idle = await rawTls(target).catch(() => undefined);
        if (idle) {
          idle.on("error", () => {});
          idle.resume();
          sockets.push(idle);
        }
        // Handshakes, then dribbles a request head for ever.
        const slow = await rawTls(target).catch(() => undefined);
        if (slow) {
          slow.on("error", () => {});
          slow.resume();
          slow.write("GET /healthz HTTP/1.1\r\nHost: localhost\r\n");
          dribbles.push(setInterval(() => slow.writable && slow.write("X-Dribble: y\r\n"), 300));
          sockets.push(slow);
        }
      }),
    );
  }
  t.comment(`opened ${sockets.length} hostile connections (${N} of each kind attempted)`);
  t.ok(peak.fds > base.fds + 50, "the server did hold them for a while");
  t.equal((await rawRequest(target, "/healthz")).status, 200, "served during the attack");
  await until(
    "every hostile connection closed by the server",
    () => sockets.every((s) => s.destroyed || s.readableEnded),
    60_000,
  );
  for (const d of dribbles) clearInterval(d);
  for (const s of sockets) s.destroy();
  await until("the server's fds back to baseline", () => fdCount() <= base.fds + 2, 30_000);
  clearInterval(sampler);
  t.comment(`during (peak): server fds ${peak.fds}, RSS ${peak.rss} MiB`);
  t.comment(`after: server fds ${fdCount()}, RSS ${rssMiB()} MiB (load ${load()})`);
  t.equal((await rawRequest(target, "/readyz")).status, 200, "the server still serves");
});

t.test("a failed-authentication flood gets 429 after the limit; another source is served", async (t) => {
  const before = { fds: fdCount(), rss: rssMiB() };
  const counts = new Map<number, number>();
  const started = Date.now();
  const total = 500;
  for (let i = 0; i < total; i += 25) {
    const answers = await Promise.all(
      Array.from({ length: 25 }, () =>
        rawRequest(target, "/admin/v1/clusters", {
          headers: { authorization: `Bearer ${issueToken().token}` },
          localAddress: "127.0.0.2",
        }),
      ),
    );
    for (const a of answers) counts.set(a.status, (counts.get(a.status) ?? 0) + 1);
  }
  const seconds = (Date.now() - started) / 1000;
  t.comment(
    `${total} guesses in ${seconds.toFixed(1)} s: ${[...counts].map(([s, n]) => `${n}× ${s}`).join(", ")}; ` +
      `server fds ${before.fds} -> ${fdCount()}, RSS ${before.rss} -> ${rssMiB()} MiB (load ${load()})`,
  );
  t.ok((counts.get(401) ?? 0) <= 20, "at most --auth-failure-limit guesses were checked");
  t.equal((counts.get(401) ?? 0) + (counts.get(429) ?? 0), total, "the rest got 429");
  const refused = await rawRequest(target, "/admin/v1/clusters", {
    headers: { authorization: "Bearer x" },
    localAddress: "127.0.0.2",
  });
  t.equal(refused.status, 429);
  t.ok(Number(refused.headers["retry-after"]) >= 1, `Retry-After: ${refused.headers["retry-after"]}`);
  const other = await rawRequest(target, "/admin/v1/clusters", { headers: { authorization: "Bearer x" } });
  t.equal(other.status, 401, "another source is still heard (and refused on its merits)");
});
