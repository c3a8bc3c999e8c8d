// Ownership's takeover and fencing rules against a fake Lease API (resourceVersion
// compare-and-swap as the apiserver does it, a watch per replica that can be held
// back) and one fake monotonic clock per replica (a paused replica's stands still).
import { Writable } from "node:stream";
import t from "tap";
import { createLogger } from "../../src/logger.js";
import { type LeaseObject, type LeaseWatch, Ownership } from "../../src/store/ownership.js";

const NS = "tether-system";
const COLLECTION = `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases`;
const DURATION = 30_000;

type Handlers = Parameters<LeaseWatch>[0];

class FakeApi {
  private rv = 100;
  readonly objects = new Map<string, LeaseObject>();
  private readonly watchers = new Set<Watcher>();
  /** Every write: "PUT tether-replica-a" etc. */
  readonly writes: string[] = [];
  /** Before a write lands: a test's chance to race it. */
  beforeWrite: ((method: string, name: string) => void) | undefined;

  async expect<T>(method: string, path: string, body?: unknown, allow: number[] = []) {
    const answer = this.answer(method, path, body as LeaseObject | undefined);
    if (!(answer.status < 300 || allow.includes(answer.status)))
      throw new Error(`${method} ${path}: HTTP ${answer.status}`);
    return answer as { status: number; body: T };
  }

  private answer(method: string, path: string, body?: LeaseObject): { status: number; body: unknown } {
    const [base, query] = path.split("?");
    const name = base!.startsWith(`${COLLECTION}/`) ? base!.slice(COLLECTION.length + 1) : undefined;
    if (method === "GET" && !name) {
      const selector = decodeURIComponent(query ?? "");
      const items = [...this.objects.values()].filter(
        (o) => !selector.includes("=owner") || o.metadata.labels?.["tether.io/kind"] === "owner",
      );
      return { status: 200, body: { items: structuredClone(items) } };
    }
    if (method === "GET") {
      const o = this.objects.get(name!);
      return o ? { status: 200, body: structuredClone(o) } : { status: 404, body: {} };
    }
    const target = name ?? body!.metadata.name;
    this.beforeWrite?.(method, target);
    const existing = this.objects.get(target);
    if (method === "DELETE") {
      if (!existing) return { status: 404, body: {} };
      const want = (body as { preconditions?: { resourceVersion?: string } } | undefined)?.preconditions;
      if (want?.resourceVersion && want.resourceVersion !== existing.metadata.resourceVersion)
        return { status: 409, body: {} };
      this.objects.delete(target);
      this.writes.push(`DELETE ${target}`);
      for (const w of this.watchers) w.gone(existing);
      return { status: 200, body: {} };
    }
    if (method === "POST" && existing) return { status: 409, body: {} };
    if (method === "PUT" && !existing) return { status: 404, body: {} };
    if (method === "PUT" && existing!.metadata.resourceVersion !== body!.metadata.resourceVersion)
      return { status: 409, body: {} };
    const stored = structuredClone(body!);
    stored.metadata.resourceVersion = String(++this.rv);
    this.objects.set(target, stored);
    this.writes.push(`${method} ${target}`);
    for (const w of this.watchers) w.push(stored);
    return { status: method === "POST" ? 201 : 200, body: structuredClone(stored) };
  }

  /** Another write to an existing object, as another replica would make it. */
  touch(name: string, change: (o: LeaseObject) => void): void {
    const o = structuredClone(this.objects.get(name)!);
    change(o);
    this.answer("PUT", `${COLLECTION}/${name}`, o);
  }

  watch(): { watch: LeaseWatch; watcher: Watcher } {
    const watcher = new Watcher(this);
    return {
      watcher,
      watch: (on) => {
        watcher.on = on;
        return {
          start: async () => {
            this.watchers.add(watcher);
            for (const o of this.objects.values()) on.set(structuredClone(o));
          },
          stop: async () => {
            this.watchers.delete(watcher);
          },
        };
      },
    };
  }
}

class Watcher {
  on: Handlers | undefined;
  held = false;
  private readonly queue: LeaseObject[] = [];
  constructor(readonly api: FakeApi) {}
  push(o: LeaseObject): void {
    if (this.held) this.queue.push(structuredClone(o));
    else this.on?.set(structuredClone(o));
  }
  gone(o: LeaseObject): void {
    if (!this.held) this.on?.delete(structuredClone(o));
  }
  release(): void {
    this.held = false;
    for (const o of this.queue.splice(0)) this.on?.set(o);
  }
}

const quiet = createLogger(
  { level: "warn" },
  new Writable({
    write(_c, _e, cb) {
      cb();
    },
  }),
);

interface Replica {
  o: Ownership;
  watcher: Watcher;
  advance(ms: number): void;
}

let wall = Date.parse("2026-12-02T00:00:00Z");

async function replica(api: FakeApi, id: string): Promise<Replica> {
  let now = 1_000;
  const { watch, watcher } = api.watch();
  const o = new Ownership({
    api,
    watch,
    namespace: NS,
    replicaId: id,
    address: `https://${id}:9443`,
    leaseDurationMs: DURATION,
    log: quiet,
    now: () => now,
    wallNow: () => wall,
    timers: false,
  });
  await o.start();
  return {
    o,
    watcher,
    advance: (ms) => {
      now += ms;
    },
  };
}

/** Moves every running replica's clock and the wall clock on, one renew interval at a time, ticking each. */
async function run(ms: number, ...replicas: Replica[]): Promise<void> {
  for (let left = ms; left > 0; left -= DURATION / 3) {
    const step = Math.min(left, DURATION / 3);
    wall += step;
    for (const r of replicas) {
      r.advance(step);
      await r.o.tick();
    }
    await settle();
  }
}

const settle = () => new Promise((r) => setTimeout(r, 5));

t.test("idle: one write per renew interval per replica, none per cluster", async (t) => {
  const api = new FakeApi();
  const a = await replica(api, "a");
  const clusters = Array.from({ length: 100 }, (_, i) => `c${i}`);
  await Promise.all(clusters.map((c) => a.o.claim(c)));
  t.ok(
    clusters.every((c) => a.o.holds(c, 0)),
    "every cluster held, generation 0",
  );
  api.writes.length = 0;
  await run(10 * (DURATION / 3), a);
  t.same(
    api.writes,
    Array(10).fill("PUT tether-replica-a"),
    "ten renewals of the replica Lease, nothing else",
  );
  t.ok(
    clusters.every((c) => a.o.holds(c)),
    "still held",
  );
});

t.test("may take over: a session on the taker takes the record at once", async (t) => {
  const api = new FakeApi();
  const a = await replica(api, "a");
  const b = await replica(api, "b");
  await a.o.claim("m1");
  t.same(b.o.owner("m1"), { replica: "a", address: "https://a:9443", generation: 0 }, "routed to a");
  await b.o.claim("m1");
  t.ok(b.o.holds("m1", 1), "b holds it, a new generation");
  t.notOk(a.o.holds("m1"), "a learned from its watch");
  t.same(a.o.owner("m1")?.replica, "b", "a routes to b");
});

t.test("may take over: a released record goes to a replica whose session wants it", async (t) => {
  const api = new FakeApi();
  const a = await replica(api, "a");
  const b = await replica(api, "b");
  await b.o.claim("m1");
  await a.o.claim("m1"); // the newest session wins; b's still wants it
  t.ok(a.o.holds("m1"));
  t.notOk(b.o.holds("m1"));
  await run(DURATION, a, b);
  t.notOk(b.o.holds("m1"), "b leaves a live owner's record alone");
  await a.o.release("m1");
  await settle();
  t.ok(b.o.holds("m1", 2), "b took it when a released it");
});

t.test(
  "may take over: an owner whose replica Lease went unrenewed a full duration, after fencing it",
  async (t) => {
    const api = new FakeApi();
    const a = await replica(api, "a");
    const b = await replica(api, "b");
    await b.o.claim("m1");
    await a.o.claim("m1");
    // a stops (paused: its clock and watch stand still); b's clock runs.
    a.watcher.held = true;
    await run(DURATION - DURATION / 3, b);
    t.notOk(b.o.holds("m1"), "must not: a's Lease unchanged for less than a duration on b's clock");
    await run(DURATION / 3, b);
    t.ok(b.o.holds("m1", 2), "may: unchanged for a full duration, and fenced");
    t.equal(api.objects.get("tether-replica-a")?.spec.holderIdentity, undefined, "a's Lease was fenced");
    t.equal(api.objects.get("tether-replica-a")?.metadata.annotations?.["tether.io/fenced-by"], "b");
    // a wakes up: its own clock says its last renewal is old; its renewal fails on the fence.
    a.advance(DURATION * 2);
    t.notOk(a.o.holds("m1"), "a serves nothing at once, before it has read anything");
    await a.o.tick();
    await settle();
    t.notOk(a.o.holds("m1"), "nor after renewing: the fence cost it what it held");
    t.equal(api.objects.get("tether-replica-a")?.spec.holderIdentity, "a", "a is alive again, with nothing");
    a.watcher.release();
    await run(DURATION, a, b);
    t.ok(b.o.holds("m1"), "b keeps it: a does not take it back");
    t.notOk(a.o.holds("m1"));
  },
);

t.test("must not take over: the owner's renewal lands before the fence", async (t) => {
  const api = new FakeApi();
  const a = await replica(api, "a");
  const b = await replica(api, "b");
  await b.o.claim("m1");
  await a.o.claim("m1");
  // b's view of a goes stale (its watch is held back) while a keeps renewing.
  b.watcher.held = true;
  await run(DURATION, a, b);
  t.ok(a.o.holds("m1"), "a holds it");
  t.notOk(b.o.holds("m1"), "b's fence failed on the resourceVersion a's renewal moved: nothing taken");
  t.equal(api.objects.get("tether-replica-a")?.spec.holderIdentity, "a", "a's Lease untouched");
  t.equal(api.objects.get("tether-owner-m1")?.spec.holderIdentity, "a");
  b.watcher.release();
});

t.test("must not take over: a replica without a session of the cluster", async (t) => {
  const api = new FakeApi();
  const a = await replica(api, "a");
  const b = await replica(api, "b");
  await a.o.claim("m1");
  a.watcher.held = true;
  await run(DURATION * 2, b);
  t.notOk(b.o.holds("m1"), "b wants nothing: the expired owner's record stays");
  t.equal(b.o.owner("m1"), undefined, "and b routes nowhere (no live owner)");
  t.equal(api.objects.get("tether-replica-a")?.spec.holderIdentity, "a", "nor is a fenced");
});

t.test(
  "split brain: an owner paused while a session elsewhere took over serves nothing when it wakes",
  async (t) => {
    const api = new FakeApi();
    const a = await replica(api, "a");
    const b = await replica(api, "b");
    await a.o.claim("m1");
    const generation = a.o.generation("m1");
    a.watcher.held = true; // paused: a hears nothing
    await b.o.claim("m1"); // the agent's new session, on b
    t.ok(b.o.holds("m1"));
    await run(DURATION, b);
    a.advance(DURATION);
    t.notOk(a.o.holds("m1", generation), "a's own clock: its renewal is too old to serve");
    await a.o.tick();
    t.notOk(a.o.holds("m1"), "its renewal succeeds (nobody fenced it), but the listed records say b");
    a.watcher.release();
    await run(DURATION, a, b);
    t.notOk(a.o.holds("m1"), "a does not take it back (its old session is not a new one)");
    t.ok(b.o.holds("m1"));
    t.same(a.o.owner("m1")?.replica, "b", "a routes to b");
  },
);

t.test("a short pause with nothing taken: the owner serves again once it renewed", async (t) => {
  const api = new FakeApi();
  const a = await replica(api, "a");
  await a.o.claim("m1");
  a.watcher.held = true;
  a.advance((DURATION * 2) / 3 + 1);
  t.notOk(a.o.holds("m1"), "refused while its renewal is too old");
  await a.o.tick();
  t.ok(a.o.holds("m1", 0), "held again, the same generation");
  a.watcher.release();
});

t.test("a late watch event older than the replica's own write does not drop the cluster", async (t) => {
  const api = new FakeApi();
  const a = await replica(api, "a");
  const b = await replica(api, "b");
  await b.o.claim("m1");
  const bWrite = structuredClone(api.objects.get("tether-owner-m1")!);
  await a.o.claim("m1");
  t.ok(a.o.holds("m1"));
  a.watcher.on!.set(bWrite); // b's earlier write, delivered late
  t.ok(a.o.holds("m1"), "still held: the event is older than a's own write");
});

t.test("a drain releases every record with a handover mark and the replica Lease at close", async (t) => {
  const api = new FakeApi();
  const a = await replica(api, "a");
  const b = await replica(api, "b");
  await a.o.claim("m1");
  await a.o.resign();
  t.notOk(a.o.holds("m1"));
  t.ok(b.o.changingHands("m1"), "b waits for the next owner");
  await a.o.close();
  t.equal(api.objects.get("tether-replica-a")?.spec.holderIdentity, undefined, "a's Lease says it resigned");
  await b.o.claim("m1");
  t.ok(b.o.holds("m1", 1));
  t.notOk(b.o.changingHands("m1"));
});

t.test("a resigning replica waits for the next owner itself, before its release is written", async (t) => {
  const api = new FakeApi();
  const a = await replica(api, "a");
  await a.o.claim("m1");
  const during: { holds?: boolean; changing?: boolean } = {};
  api.beforeWrite = (_method, name) => {
    if (name !== "tether-owner-m1" || during.holds !== undefined) return;
    during.holds = a.o.holds("m1");
    during.changing = a.o.changingHands("m1");
  };
  await a.o.resign();
  api.beforeWrite = undefined;
  t.equal(during.holds, false, "while its release is on its way it no longer serves m1");
  t.equal(
    during.changing,
    true,
    "but m1 is changing hands: a request waits for the next owner (a 503 before)",
  );
  t.ok(a.o.changingHands("m1"), "and once the release is written");
  a.advance(DURATION + 1);
  wall += DURATION + 1;
  t.notOk(a.o.changingHands("m1"), "a lease duration at most: then nobody is coming");
});

t.test("a fenced replica claims again what its sessions still want, as a new generation", async (t) => {
  const api = new FakeApi();
  const a = await replica(api, "a");
  await a.o.claim("m1");
  await a.o.claim("m2");
  // Fenced by a replica that lost its view of a (no session of m1 or m2 there: it took nothing).
  api.touch("tether-replica-a", (o) => {
    delete o.spec.holderIdentity;
  });
  t.notOk(a.o.holds("m1"), "the watch told a at once");
  await a.o.tick();
  await settle();
  t.ok(a.o.holds("m1", 1) && a.o.holds("m2", 1), "claimed again under new generations");
});

t.test("the Lease of a replica gone an hour is deleted; a live one's is not", async (t) => {
  const api = new FakeApi();
  const a = await replica(api, "a");
  const b = await replica(api, "b");
  const c = await replica(api, "c");
  await c.o.close(); // c resigned: its Lease stays, holder cleared
  a.watcher.held = true; // a is gone without a word
  await run(3_600_000 - DURATION, b);
  t.ok(api.objects.has("tether-replica-a") && api.objects.has("tether-replica-c"), "kept for an hour");
  await run(2 * DURATION, b);
  t.notOk(api.objects.has("tether-replica-a"), "a's deleted");
  t.notOk(api.objects.has("tether-replica-c"), "c's deleted");
  t.ok(api.objects.has("tether-replica-b"), "b's own stays");
  // a comes back: its renewal finds its Lease gone, and it starts again with nothing.
  a.watcher.release();
  a.advance(3_600_000);
  await a.o.tick();
  t.equal(api.objects.get("tether-replica-a")?.spec.holderIdentity, "a", "a wrote its Lease again");
});

t.test(
  "a rolling upgrade: records of a version without replica Leases route by their renewTime",
  async (t) => {
    const api = new FakeApi();
    const b = await replica(api, "b");
    // As the older version wrote it: renewed every 10 s, a 30 s duration, no replica Lease.
    const old = (renewed: number): LeaseObject => ({
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: {
        name: "tether-owner-m1",
        namespace: NS,
        labels: { "tether.io/kind": "owner", "tether.io/cluster": "m1" },
        annotations: { "tether.io/replica-address": "https://old:9443" },
      },
      spec: { holderIdentity: "old", leaseDurationSeconds: 30, renewTime: new Date(renewed).toISOString() },
    });
    await api.expect("POST", COLLECTION, old(wall));
    t.same(
      b.o.owner("m1"),
      { replica: "old", address: "https://old:9443", generation: 0 },
      "routed while renewed",
    );
    wall += 31_000;
    t.equal(b.o.owner("m1"), undefined, "not once its renewTime is a duration old");
    await b.o.claim("m1");
    const record = api.objects.get("tether-owner-m1")!;
    t.ok(
      record.spec.leaseDurationSeconds! > 365 * 86_400,
      "this version's record looks live to the older one",
    );
    t.equal(record.metadata.annotations?.["tether.io/alive-while"], "replica-lease");
  },
);
