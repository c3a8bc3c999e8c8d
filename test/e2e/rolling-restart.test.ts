// Issue 14, rolling restart under load: three replicas behind HAProxy (its
// health check is /readyz, as a Service's readiness probe would be), two
// members. While a GET loop (>= 20 req/s) runs through the balancer, 20
// list+watch informers (resourceVersion resume, relist only on 410) follow a
// namespace per member in which ConfigMaps keep being created, updated and
// deleted, and a 60 s `kubectl exec` runs, the replicas are restarted one by
// one with SIGTERM (each keeps serving for its --shutdown-delay, readiness
// 503, while HAProxy's health checks take it out): no GET fails, every
// informer ends with the objects a direct list shows and saw every write of
// every object in order. Then
// kill -9 of an owner, five times: the time until its members answer again,
// and no GET fails outside those windows. The figures go to the test output.
import { request } from "node:https";
import { performance } from "node:perf_hooks";
import t, { type Test } from "tap";
import type { Cluster } from "../kube/index.js";
import { until } from "./fixture.js";
import { get, median, type Replica, startFleet, status } from "./replica-fleet.js";
import { signal } from "./tether-processes.js";

const NAMESPACE = "roll";
const INFORMERS_PER_MEMBER = 10;
const OBJECTS_PER_MEMBER = 8;
const TRIALS = 5;
const EXEC_SECONDS = 60;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface ConfigMap {
  metadata: { name: string; resourceVersion: string };
}

/** What each ConfigMap went through, as "A:<rv>", "M:<rv>", "D" entries. */
type History = Map<string, string[]>;

const record = (h: History, name: string, entry: string) => {
  const list = h.get(name) ?? [];
  list.push(entry);
  h.set(name, list);
};

/**
 * A client-go-style informer through Tether: list, then watch from the
 * list's resourceVersion, resuming from the last one seen when a watch ends
 * (or fails: then after a short backoff); a 410 relists.
 */
class Informer {
  readonly objects = new Map<string, string>();
  readonly seen: History = new Map();
  rv = "";
  watches = 0;
  relists = 0;
  errors = 0;
  readonly errorKinds = new Map<string, number>();
  private current: { destroy(): void } | undefined;
  private stopped = false;

  constructor(
    private readonly base: string,
    private readonly ca: string,
    private readonly token: string,
    /** The test's phase now, to say when a list or watch failed. */
    private readonly phase: () => string,
  ) {}

  private path = `/api/v1/namespaces/${NAMESPACE}/configmaps`;

  async run(): Promise<void> {
    let listed = false;
    while (!this.stopped) {
      try {
        if (!listed) {
          await this.list();
          listed = true;
        }
        const outcome = await this.watch();
        if (outcome === "gone") listed = false;
      } catch (err) {
        if (this.stopped) return;
        this.errors++;
        const what = `${this.phase().replace(/-\d+$/, "")}: ${(err as Error).message.slice(0, 120)}`;
        this.errorKinds.set(what, (this.errorKinds.get(what) ?? 0) + 1);
        await sleep(200);
      }
    }
  }

  stop(): void {
    this.stopped = true;
    this.current?.destroy();
  }

  private async list(): Promise<void> {
    const body = await new Promise<string>((resolve, reject) => {
      const req = request(
        `${this.base}${this.path}`,
        { ca: this.ca, agent: false, timeout: 10_000, headers: { authorization: `Bearer ${this.token}` } },
        (res) => {
          let text = "";
          res.on("data", (c: Buffer) => (text += c.toString()));
          res.on("end", () =>
            res.statusCode === 200
              ? resolve(text)
              : reject(new Error(`list: ${res.statusCode} ${text.slice(0, 200)}`)),
          );
          res.on("error", reject);
        },
      );
      req.on("timeout", () => req.destroy(new Error("list: no answer")));
      req.on("error", reject);
      req.end();
    });
    const list = JSON.parse(body) as { metadata: { resourceVersion: string }; items: ConfigMap[] };
    if (this.rv) this.relists++;
    this.objects.clear();
    for (const item of list.items) {
      this.objects.set(item.metadata.name, item.metadata.resourceVersion);
      record(this.seen, item.metadata.name, `L:${item.metadata.resourceVersion}`);
    }
    this.rv = list.metadata.resourceVersion;
  }

  /** One watch, until it ends: "ended" (resume from this.rv) or "gone" (relist). */
  private watch(): Promise<"ended" | "gone"> {
    const timeout = 20 + Math.floor(Math.random() * 20);
    const url = `${this.base}${this.path}?watch=1&allowWatchBookmarks=true&timeoutSeconds=${timeout}&resourceVersion=${this.rv}`;
    return new Promise((resolve, reject) => {
      let gone = false;
      const req = request(
        url,
        { ca: this.ca, agent: false, headers: { authorization: `Bearer ${this.token}` } },
        (res) => {
          if (res.statusCode !== 200) {
            let text = "";
            res.on("data", (c: Buffer) => (text += c.toString()));
            res.on("end", () => reject(new Error(`watch: ${res.statusCode} ${text.slice(0, 200)}`)));
            res.on("error", reject);
            return;
          }
          this.watches++;
          let buffer = "";
          res.on("data", (c: Buffer) => {
            buffer += c.toString();
            let nl = buffer.indexOf("\n");
            while (nl >= 0) {
              const line = buffer.slice(0, nl);
              buffer = buffer.slice(nl + 1);
              if (line.trim()) gone = this.event(JSON.parse(line)) || gone;
              nl = buffer.indexOf("\n");
            }
          });
          res.on("end", () => {
            if (buffer.trim()) reject(new Error(`watch ended inside an event: ${buffer.slice(0, 80)}`));
            else resolve(gone ? "gone" : "ended");
          });
          res.on("error", reject);
          res.on("aborted", () => reject(new Error("watch aborted")));
        },
      );
      this.current = req;
      req.on("error", reject);
      req.end();
    });
  }

  /** Applies one watch event; true for a 410 ERROR. */
  private event(e: { type: string; object: ConfigMap & { code?: number } }): boolean {
    if (e.type === "ERROR") {
      if (e.object.code === 410) return true;
      throw new Error(`watch ERROR ${JSON.stringify(e.object).slice(0, 200)}`);
    }
    const { name, resourceVersion } = e.object.metadata;
    this.rv = resourceVersion;
    if (e.type === "BOOKMARK") return false;
    if (e.type === "DELETED") {
      this.objects.delete(name);
      record(this.seen, name, "D");
    } else {
      this.objects.set(name, resourceVersion);
      record(this.seen, name, `${e.type === "ADDED" ? "A" : "M"}:${resourceVersion}`);
    }
    return false;
  }
}

/** Creates, updates and deletes ConfigMaps on the member directly, writing down each resulting resourceVersion. */
function writer(member: Cluster) {
  const written: History = new Map();
  const live = new Set<string>();
  let stopped = false;
  let writes = 0;
  const path = `/api/v1/namespaces/${NAMESPACE}/configmaps`;
  const done = (async () => {
    while (!stopped) {
      const name = `cm-${Math.floor(Math.random() * OBJECTS_PER_MEMBER)}`;
      writes++;
      if (!live.has(name)) {
        const res = await member.api<ConfigMap>("POST", path, {
          metadata: { name },
          data: { n: `${writes}` },
        });
        live.add(name);
        record(written, name, `A:${res.body.metadata.resourceVersion}`);
      } else if (Math.random() < 0.7) {
        const res = await member.api<ConfigMap>("PUT", `${path}/${name}`, {
          metadata: { name },
          data: { n: `${writes}` },
        });
        record(written, name, `M:${res.body.metadata.resourceVersion}`);
      } else {
        await member.api("DELETE", `${path}/${name}`);
        live.delete(name);
        record(written, name, "D");
      }
      await sleep(100);
    }
  })();
  return {
    written,
    get writes() {
      return writes;
    },
    async stop() {
      stopped = true;
      await done;
    },
  };
}

/** The failures, grouped by what they said, with the first and last time of each. */
function report(t: Test, failures: { at: number; name: string; code: number; what: string }[]) {
  const groups = new Map<string, number[]>();
  for (const f of failures) {
    const what = `${f.code} ${f.what.slice(0, 240)}`;
    groups.set(what, [...(groups.get(what) ?? []), f.at]);
  }
  for (const [what, at] of groups)
    t.comment(
      `${at.length}× from ${new Date(at[0]!).toISOString()} to ${new Date(at.at(-1)!).toISOString()}: ${what}`,
    );
}

t.test("rolling restart under load", async (t) => {
  const fleet = await startFleet(t, {
    // The delay outlasts HAProxy's three failed /readyz checks (250 ms apart), as the deployment's 5 s
    // outlast its readiness probe; the grace leaves the drain after it 2 s.
    serverArgs: ["--shutdown-grace", "4s", "--shutdown-delay", "2s"],
    // Shorter than the Lease (3 s): a request waits for a drained owner's next one that long at most.
    agentArgs: ["--reconnect-spread", "1.5"],
  });
  const { members, replicas, lbUrl, ca, tokens } = fleet;
  const { startReplica, holderOf, byId, kubeconfigVia } = fleet;
  for (const member of Object.values(members)) {
    await member.api("POST", "/api/v1/namespaces", { metadata: { name: NAMESPACE } }, [409]);
  }
  const lbKubeconfig = await kubeconfigVia("m2", { id: "balancer", url: lbUrl } as Replica);

  // The GET loop: two sequential loops per member (so a loaded machine still offers >= 20 req/s), a new
  // connection per request, through the balancer.
  let phase = "warm-up";
  const failures: { at: number; phase: string; name: string; code: number; what: string }[] = [];
  const requests: Record<string, number> = {};
  let loopsStopped = false;
  const loops = [...Object.keys(members), ...Object.keys(members)].map(async (name) => {
    while (!loopsStopped) {
      requests[phase] = (requests[phase] ?? 0) + 1;
      const during = phase;
      const { code, what } = await get(`${lbUrl}/clusters/${name}/version`, {
        ca: ca.certPem,
        token: tokens[name]!,
      });
      // A request in flight when a replica was killed counts in that kill's window.
      const counted = phase.startsWith("kill-") ? phase : during;
      if (code !== 200) failures.push({ at: Date.now(), phase: counted, name, code, what });
      await sleep(20);
    }
  });

  const informers: { member: string; informer: Informer; done: Promise<void> }[] = [];
  for (const name of Object.keys(members)) {
    for (let i = 0; i < INFORMERS_PER_MEMBER; i++) {
      const informer = new Informer(`${lbUrl}/clusters/${name}`, ca.certPem, tokens[name]!, () => phase);
      informers.push({ member: name, informer, done: informer.run() });
    }
  }
  await until("every informer listed", async () => informers.every((i) => i.informer.watches > 0), 30_000);
  const writers = Object.fromEntries(Object.entries(members).map(([name, m]) => [name, writer(m)]));

  const execStarted = performance.now();
  const exec = fleet.m2.spawnKubectl(
    [
      "exec",
      "box",
      "--",
      "sh",
      "-c",
      `i=0; while [ $i -lt ${EXEC_SECONDS} ]; do i=$((i+1)); echo tick $i; sleep 1; done; echo done`,
    ],
    { kubeconfig: lbKubeconfig },
  );
  let execEnded = -1;
  void exec.exited.then(() => (execEnded = performance.now() - execStarted));

  const windowStart: Record<string, number> = {};
  const windowEnd: Record<string, number> = {};
  const rps = (p: string) => ((requests[p] ?? 0) * 1000) / ((windowEnd[p] ?? 0) - (windowStart[p] ?? 0));
  const begin = (p: string) => {
    windowStart[p] = performance.now();
    phase = p;
  };
  const end = (p: string) => {
    windowEnd[p] = performance.now();
  };

  begin("warm-up");
  await sleep(3_000);
  end("warm-up");

  await t.test("SIGTERM, one replica after the other", async (t) => {
    begin("rolling");
    for (const r of replicas) {
      const held = [];
      for (const name of Object.keys(members)) if ((await holderOf(name)) === r.id) held.push(name);
      const stoppedAt = performance.now();
      signal(r.proc!, "SIGTERM");
      await r.proc!.exited;
      const code = r.proc!.exitCode;
      const exitedAfter = performance.now() - stoppedAt;
      await startReplica(r);
      t.comment(
        `${r.id} (held ${held.join(", ") || "nothing"}): exited ${code} ${exitedAfter.toFixed(0)} ms after SIGTERM, ready again after ${(performance.now() - stoppedAt).toFixed(0)} ms`,
      );
      // The balancer's health check (every 250 ms) takes it back before the next one goes.
      await sleep(2_000);
    }
    end("rolling");
    const rolling = failures.filter((f) => f.phase === "rolling");
    t.comment(
      `GET loop during the rolling restart: ${requests.rolling} requests (${rps("rolling").toFixed(1)}/s), ${rolling.length} failed`,
    );
    report(t, rolling);
    t.ok(rps("rolling") >= 20, "the GET loop ran at 20 requests per second or more");
    // Issue 14's target. Earlier losses, each with its fix: two "socket hang up" as a replica exited (a
    // drain lingers for connections accepted as its listener closed); a 503 while m2 changed hands (a
    // stream an agent never took is sent again, a request waits for the session its replica's Lease
    // names); "Client network socket disconnected before secure TLS connection was established" (a
    // connection in the listen backlog of a listener closed at SIGTERM was reset: --shutdown-delay keeps
    // the listener open, readiness 503, until HAProxy has taken the replica out); two 503 "no connected
    // agent" some 50 ms after SIGTERM on the resigning holder (it had stopped holding the cluster before
    // its handover mark was watched back: it now waits for the next owner from that moment). A
    // "connect ECONNREFUSED" once reported was a readiness poll's error in a failure record shared by
    // every request (replica-fleet.ts get() now returns each request's own).
    t.equal(rolling.length, 0, "no GET failed during the rolling restart");
  });

  await t.test("kill -9 of an owner, under the same load", async (t) => {
    const trials: number[] = [];
    for (let trial = 0; trial < TRIALS; trial++) {
      const cluster = trial % 2 === 0 ? "m1" : "m2";
      const victim = byId(await holderOf(cluster))!;
      const held: string[] = [];
      for (const name of Object.keys(members)) if ((await holderOf(name)) === victim.id) held.push(name);
      begin(`kill-${trial}`);
      const killedAt = performance.now();
      signal(victim.proc!, "SIGKILL");
      await victim.proc!.exited;
      await until(
        `${held.join(", ")} reachable again after ${victim.id} was killed`,
        async () => {
          for (const name of held) {
            const code = await status(`${lbUrl}/clusters/${name}/version`, {
              ca: ca.certPem,
              token: tokens[name]!,
            });
            if (code !== 200) return false;
          }
          return true;
        },
        30_000,
      );
      const took = performance.now() - killedAt;
      trials.push(took);
      end(`kill-${trial}`);
      begin("after-kill");
      t.comment(
        `trial ${trial + 1}: killed ${victim.id} (held ${held.join(", ")}): reachable again after ${took.toFixed(0)} ms`,
      );
      await startReplica(victim);
      await sleep(2_000);
    }
    end("after-kill");
    const inWindows = failures.filter((f) => f.phase.startsWith("kill-"));
    const after = failures.filter((f) => f.phase === "after-kill");
    t.comment(
      `time to reachable over ${trials.length} trials: p50 ${median(trials).toFixed(0)} ms, max ${Math.max(...trials).toFixed(0)} ms; ` +
        `${inWindows.length} GETs failed between a kill and reachable again, ${after.length} outside those windows ` +
        `(out of ${requests["after-kill"] ?? 0})`,
    );
    report(t, after);
    t.equal(trials.length, TRIALS);
    t.equal(after.length, 0, "no GET failed once the members were reachable again (restarts included)");
  });

  await t.test("the informers saw every write", async (t) => {
    loopsStopped = true;
    await Promise.all(loops);
    for (const w of Object.values(writers)) await w.stop();
    const direct: Record<string, Map<string, string>> = {};
    for (const [name, member] of Object.entries(members)) {
      const list = await member.api<{ items: ConfigMap[] }>(
        "GET",
        `/api/v1/namespaces/${NAMESPACE}/configmaps`,
      );
      direct[name] = new Map(list.body.items.map((i) => [i.metadata.name, i.metadata.resourceVersion]));
    }
    const same = (a: Map<string, string>, b: Map<string, string>) =>
      a.size === b.size && [...a].every(([k, v]) => b.get(k) === v);
    await until(
      "every informer caught up with the last write",
      async () => informers.every((i) => same(i.informer.objects, direct[i.member]!)),
      30_000,
    ).catch(() => {});
    for (const i of informers) i.informer.stop();
    await Promise.all(informers.map((i) => i.done));
    let matching = 0;
    let inOrder = 0;
    for (const [n, { member, informer }] of informers.entries()) {
      const written = writers[member]!.written;
      const sameObjects = same(informer.objects, direct[member]!);
      const missed: string[] = [];
      for (const [name, history] of written) {
        const seen = (informer.seen.get(name) ?? []).filter((e) => !e.startsWith("L:"));
        if (seen.join(" ") !== history.join(" "))
          missed.push(`${name}: wrote ${history.join(" ")}; saw ${seen.join(" ")}`);
      }
      if (sameObjects) matching++;
      if (missed.length === 0) inOrder++;
      t.ok(sameObjects, `informer ${n} (${member}) ends with the objects of a direct list`);
      t.same(missed, [], `informer ${n} (${member}) saw every write of every object, in order`);
      if (n % INFORMERS_PER_MEMBER === 0 || informer.relists || missed.length)
        t.comment(
          `informer ${n} (${member}): ${informer.watches} watches, ${informer.relists} relists, ${informer.errors} failed list/watch attempts${[...informer.errorKinds].map(([w, n]) => ` ${n}× ${w}`).join(";")}`,
        );
    }
    const totals = informers.reduce(
      (a, { informer: i }) => ({
        watches: a.watches + i.watches,
        relists: a.relists + i.relists,
        errors: a.errors + i.errors,
      }),
      { watches: 0, relists: 0, errors: 0 },
    );
    const kinds = new Map<string, number>();
    for (const { informer } of informers)
      for (const [what, n] of informer.errorKinds) kinds.set(what, (kinds.get(what) ?? 0) + n);
    for (const [what, n] of kinds) t.comment(`failed list/watch attempts, ${n}× during ${what}`);
    t.comment(
      `informers: ${matching}/${informers.length} end with the direct list's objects, ${inOrder}/${informers.length} saw every write in order; ` +
        `writes ${Object.entries(writers)
          .map(([n, w]) => `${n} ${w.writes}`)
          .join(", ")}; ` +
        `${totals.watches} watches, ${totals.relists} relists, ${totals.errors} failed list/watch attempts in all`,
    );
  });

  await t.test("what the exec saw", async (t) => {
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([
      exec.exited,
      new Promise<string>((resolve) => {
        timer = setTimeout(() => resolve("still running"), EXEC_SECONDS * 2_000);
      }),
    ]);
    clearTimeout(timer);
    if (code === "still running") await exec.stop();
    const ticks = exec.stdout.match(/tick \d+/g) ?? [];
    t.comment(
      `kubectl exec of ${EXEC_SECONDS} s through the balancer: exit ${code} after ${(execEnded / 1000).toFixed(1)} s, ` +
        `${ticks.length} ticks (last "${ticks.at(-1) ?? "none"}")${exec.stdout.includes("done") ? ", ran to the end" : ""}; ` +
        `stderr: ${exec.stderr.trim().slice(0, 300) || "(none)"}`,
    );
    t.pass("reported");
  });
});
