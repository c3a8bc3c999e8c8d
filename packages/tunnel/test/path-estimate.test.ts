import t from "tap";
import { INITIAL_WINDOW } from "../src/frame.js";
import {
  formatPathEstimate,
  MAX_CARRIED_RATE,
  mirrorPathEstimate,
  type PathEstimate,
  parsePathEstimate,
  sanitizePathEstimate,
} from "../src/path-estimate.js";
import { PathMemory } from "../src/path-memory.js";
import type { Session } from "../src/session.js";
import { pair, readAll } from "./lib/pair.js";

t.test("an estimate survives the header round trip, to a tenth of a ms and a byte per second", async (t) => {
  const estimate = { sendRate: 218_000.5, receiveRate: 1234.25, minRtt: 51.63 };
  const header = formatPathEstimate(estimate);
  t.equal(header, "send=218000500, receive=1234250, rtt=51.6");
  t.same(parsePathEstimate(header), { sendRate: 218_000.5, receiveRate: 1234.25, minRtt: 51.6 });
  t.same(mirrorPathEstimate(estimate), { sendRate: 1234.25, receiveRate: 218_000.5, minRtt: 51.63 });
});

t.test("absurd estimates are clamped or ignored", async (t) => {
  const ok = { sendRate: 1000, receiveRate: 1000, minRtt: 50 };
  t.same(sanitizePathEstimate(ok), ok);
  for (const minRtt of [0, -1, 0.05, 60_001, Number.NaN, Number.POSITIVE_INFINITY, "50", undefined]) {
    t.equal(sanitizePathEstimate({ ...ok, minRtt }), undefined, `min RTT ${String(minRtt)} is ignored`);
  }
  for (const rate of [0, -5, Number.NaN, Number.NEGATIVE_INFINITY, "9", null]) {
    t.same(
      sanitizePathEstimate({ ...ok, sendRate: rate }),
      { ...ok, sendRate: 0 },
      `send rate ${String(rate)} is unknown`,
    );
  }
  t.equal(sanitizePathEstimate({ sendRate: 0, receiveRate: -1, minRtt: 50 }), undefined, "no rate at all");
  t.same(
    sanitizePathEstimate({ ...ok, receiveRate: Number.POSITIVE_INFINITY }),
    { ...ok, receiveRate: 0 },
    "an infinite rate is no rate",
  );
  t.same(
    sanitizePathEstimate({ ...ok, sendRate: 1e300 }),
    { ...ok, sendRate: MAX_CARRIED_RATE },
    "a huge rate is clamped",
  );
  for (const v of [undefined, null, 42, "x", [], () => 1]) {
    t.equal(sanitizePathEstimate(v), undefined, `${typeof v} is no estimate`);
  }
});

t.test("a malformed header is ignored, never thrown on", async (t) => {
  const bad: unknown[] = [
    undefined,
    ["send=1, receive=1, rtt=50", "send=1, receive=1, rtt=50"], // repeated header
    "",
    "send=1, receive=1",
    "send=1, receive=1, rtt=50, extra=1",
    "send=-1, receive=1, rtt=50",
    "send=1e9, receive=1, rtt=50",
    "send=0x10, receive=1, rtt=50",
    "send=NaN, receive=1, rtt=50",
    "send=1, receive=1, rtt=0",
    "send=1, receive=1, rtt=999999",
    "send=0, receive=0, rtt=50",
    "send=١٢, receive=1, rtt=50", // non-ASCII digits
    `send=${"9".repeat(16)}, receive=1, rtt=50`,
    `send=1, receive=1, rtt=50${" ".repeat(200)}`,
    "receive=1, send=1, rtt=50",
  ];
  for (const value of bad) t.equal(parsePathEstimate(value), undefined, JSON.stringify(value));
  t.same(
    parsePathEstimate(`send=${"9".repeat(15)}, receive=1, rtt=50`),
    { sendRate: MAX_CARRIED_RATE, receiveRate: 0.001, minRtt: 50 },
    "15 digits parse and clamp",
  );
});

t.test("path memory keeps the last estimate per key until it expires", async (t) => {
  const memory = new PathMemory(1000);
  const session = (estimate: unknown) => ({ pathEstimate: estimate }) as unknown as Session;
  t.equal(memory.recall("a", 0), undefined);
  memory.remember("a", session(undefined), 0);
  t.equal(memory.recall("a", 0), undefined, "a session without an estimate leaves nothing");
  memory.remember("a", session({ sendRate: 5, receiveRate: 6, minRtt: 7 }), 0);
  memory.remember("b", session({ sendRate: 1, receiveRate: 1, minRtt: 1 }), 0);
  t.same(memory.recall("a", 500), { sendRate: 5, receiveRate: 6, minRtt: 7 });
  memory.remember("a", session({ sendRate: 8, receiveRate: 6, minRtt: 7 }), 600);
  t.same(memory.recall("a", 1500), { sendRate: 8, receiveRate: 6, minRtt: 7 }, "the newer one");
  t.equal(memory.recall("b", 1500), undefined, "expired");
  t.equal(memory.recall("a", 1601), undefined, "expired too");
});

t.test("a session given an absurd estimate ignores or clamps it and still moves data", async (t) => {
  const absurd: unknown[] = [
    { sendRate: Number.NaN, receiveRate: Number.NaN, minRtt: Number.NaN },
    { sendRate: -1, receiveRate: -1, minRtt: -50 },
    { sendRate: 0, receiveRate: 0, minRtt: 50 },
    { sendRate: 1e300, receiveRate: 1e300, minRtt: 0.1 },
    { sendRate: 1e300, receiveRate: Number.POSITIVE_INFINITY, minRtt: 60_000 },
    "send=1, receive=1, rtt=50",
    null,
  ];
  for (const estimate of absurd) {
    const link = pair(
      { pathEstimate: estimate as PathEstimate, keepAliveInterval: 10_000 },
      { pathEstimate: estimate as PathEstimate, keepAliveInterval: 10_000 },
    );
    const what = JSON.stringify(estimate);
    t.ok(link.server.path.receiveRate <= MAX_CARRIED_RATE, `${what}: the receive rate is clamped`);
    t.ok(
      link.server.initialWindow >= INITIAL_WINDOW && link.server.initialWindow <= 2 ** 31,
      `${what}: a window a stream can start with (${link.server.initialWindow})`,
    );
    const body = Buffer.alloc(3 * 1024 * 1024, 7);
    link.server.on("stream", (s) => s.pipe(s));
    const s = link.client.open("echo");
    s.end(body);
    const back = await readAll(s);
    t.equal(back.length, body.length, `${what}: the echo came back whole`);
    t.ok(link.client.pathEstimate === undefined || link.client.pathEstimate.minRtt > 0);
    link.client.close();
    link.server.close();
  }
});
