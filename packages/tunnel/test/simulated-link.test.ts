/**
 * Sessions over a simulated bottleneck (virtual clock, bandwidth, delay and a
 * queue in front of the bottleneck, see lib/simulated-link.ts): one bulk stream
 * saturates the client→server direction, a stalled reader holds a second, and
 * the server makes small request/response round trips to the client on a third.
 */

import fc from "fast-check";
import t from "tap";
import { FrameType, HEADER_SIZE } from "../src/frame.js";
import { mirrorPathEstimate, type PathEstimate } from "../src/path-estimate.js";
import { CAP_FLOOR, GAIN, SMALL_ALLOWANCE } from "../src/path-estimator.js";
import type { TunnelStream } from "../src/stream.js";
import { type Shape, SimulatedLink } from "./lib/simulated-link.js";

const CHUNK = Buffer.alloc(64 * 1024, 0x5a);
const WARM_UP = 3000;
// Past MIN_RTT_WINDOW_MS, so every run goes through probe-rtt at least once.
const DURATION = 14_000;

interface Outcome {
  bulkRate: number;
  /** Queueing delay in front of the bottleneck (ms), sampled every 10 ms after the warm-up. */
  queueMs: number[];
  smallRtts: number[];
  capOverBdp: number[];
  violations: string[];
  /** Virtual ms at which the client stopped using a carried send rate (-1: never used one or kept it). */
  carriedDroppedAt: number;
}

/**
 * `carried`: the client starts from this estimate and the server from its
 * mirror (what the agent's connect header tells it); measurements then start
 * after `warmUp` ms.
 */
async function scenario(shape: Shape, carried?: PathEstimate, warmUp = WARM_UP): Promise<Outcome> {
  const link =
    carried === undefined
      ? new SimulatedLink(shape)
      : new SimulatedLink(shape, { pathEstimate: carried }, { pathEstimate: mirrorPathEstimate(carried) });
  const duration = warmUp + DURATION - WARM_UP;
  const violations: string[] = [];
  const { client, server } = link;
  // The cap holds for every data frame the client writes: what was in flight before it was below the cap.
  link.toServer.onSend = (message) => {
    if (message[1] !== FrameType.DATA || message.length <= HEADER_SIZE) return;
    const before = client.inFlightData - message.length;
    if (before >= client.path.cap + SMALL_ALLOWANCE) {
      violations.push(`data frame sent with ${before} in flight, cap ${client.path.cap}`);
    }
  };
  let received = 0;
  let receivedAtWarmUp = 0;
  let stalled: TunnelStream | undefined;
  let stalledStart = 0;
  server.on("stream", (s) => {
    s.on("error", () => {});
    if (s.service === "stall") {
      stalled = s;
      stalledStart = s.recvWindow.size;
      s.pause();
    } else s.on("data", (d: Buffer) => (received += d.length));
  });
  client.on("stream", (s) => {
    s.on("error", () => {});
    s.pipe(s); // echo: the response takes the congested direction
  });
  const bulk = client.open("bulk");
  bulk.on("error", () => {});
  const pump = () => {
    while (bulk.write(CHUNK));
  };
  bulk.on("drain", pump);
  pump();
  const stall = client.open("stall");
  stall.on("error", () => {});
  for (let i = 0; i < 128; i++) stall.write(CHUNK); // 8 MiB the reader never takes
  const smallRtts: number[] = [];
  const small = () => {
    const started = link.now;
    const s = server.open("echo");
    s.on("error", () => {});
    s.write(Buffer.alloc(200, 1));
    let got = 0;
    s.on("data", (d: Buffer) => {
      got += d.length;
      if (got >= 200) {
        if (started >= warmUp) smallRtts.push(link.now - started);
        s.destroy();
        if (link.now < duration - 1000) link.at(link.now + 50, small);
      }
    });
  };
  link.at(100, small);
  const queueMs: number[] = [];
  const capOverBdp: number[] = [];
  const bdp = shape.rate * 2 * shape.delay;
  for (let at = warmUp; at < duration; at += 10) {
    link.at(at, () => {
      if (at === warmUp) receivedAtWarmUp = received;
      queueMs.push(link.queued(link.toServer) / shape.rate);
      capOverBdp.push(client.path.cap / bdp);
    });
  }
  let carrying = false;
  let carriedDroppedAt = -1;
  await link.run(duration, () => {
    if (client.path.carrying) carrying = true;
    else if (carrying && carriedDroppedAt < 0) carriedDroppedAt = link.now;
    if (stalled !== undefined) {
      const held = stalled.bufferedInbound + stalled.readableLength;
      if (held > stalled.recvWindow.size + stalled.readableHighWaterMark) {
        violations.push(`stalled reader holds ${held}, window ${stalled.recvWindow.size}`);
      }
      if (stalled.recvWindow.size > stalledStart) {
        violations.push(`a stalled reader's window grew to ${stalled.recvWindow.size}`);
      }
    }
  });
  await link.close();
  return {
    bulkRate: (received - receivedAtWarmUp) / (duration - warmUp),
    queueMs,
    smallRtts,
    capOverBdp,
    violations,
    carriedDroppedAt,
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

t.test(
  "over a shaped link the cap holds, the queue stays near one RTT and small round trips are bounded",
  async (t) => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          rate: fc.integer({ min: 500, max: 20_000 }), // 0.5 to 20 MB/s
          delay: fc.integer({ min: 5, max: 40 }), // 10 to 80 ms RTT
        }),
        async (shape) => steadyState(shape, await scenario(shape), JSON.stringify(shape)),
      ),
      { numRuns: 12 },
    );
    t.pass();
  },
);

/** What a session over `shape` must show once warm: the cap held, line rate, a queue of about one RTT. */
function steadyState(shape: Shape, o: Outcome, what: string): void {
  const rtt = 2 * shape.delay;
  if (o.violations.length > 0) throw new Error(`${what}: ${o.violations[0]}`);
  if (o.bulkRate < 0.85 * shape.rate) throw new Error(`${what}: bulk at ${o.bulkRate} B/ms`);
  const queue = median(o.queueMs);
  // Gain 2 keeps about one RTT queued, plus a frame or two of quantisation.
  const frameMs = (16 * 1024) / shape.rate;
  if (queue > 1.5 * rtt + 4 * frameMs) throw new Error(`${what}: median queue ${queue} ms`);
  const cap = median(o.capOverBdp);
  const floor = CAP_FLOOR / (shape.rate * rtt);
  if (cap < 1 || cap > Math.max(4, floor)) throw new Error(`${what}: cap ${cap} x BDP`);
  if (o.smallRtts.length < 10) throw new Error(`${what}: only ${o.smallRtts.length} round trips`);
  const worst = Math.max(...o.smallRtts);
  if (worst > 3 * rtt + 6 * frameMs) throw new Error(`${what}: a small round trip took ${worst} ms`);
}

t.test(
  "a carried estimate from a faster path is dropped within a few RTTs, and the session converges to the slow one",
  async (t) => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          rate: fc.integer({ min: 2_000, max: 20_000 }), // 2 to 20 MB/s
          delay: fc.integer({ min: 10, max: 40 }), // 20 to 80 ms RTT
          faster: fc.integer({ min: 3, max: 30 }), // the carried path moved this many times more
        }),
        async ({ rate, delay, faster }) => {
          const shape = { rate, delay };
          const carried = { sendRate: faster * rate, receiveRate: faster * rate, minRtt: 2 * delay };
          // What may sit in front of the bottleneck before the drop: one carried cap, plus what the
          // stalled stream's carried window let through once. Measure after that drained.
          const flood = GAIN * carried.sendRate * carried.minRtt + 8 * 1024 * 1024;
          const warmUp = flood / rate + WARM_UP;
          const o = await scenario(shape, carried, warmUp);
          const what = JSON.stringify({ rate, delay, faster });
          if (o.carriedDroppedAt < 0) throw new Error(`${what}: the carried rate was never dropped`);
          // Adopted at the first pong, dropped when a ping sent after that is QUEUE_RTT_FACTOR RTTs late:
          // before what it let out drained, so nothing more follows on its word.
          if (o.carriedDroppedAt > flood / rate) {
            throw new Error(`${what}: the carried rate lasted until ${o.carriedDroppedAt} ms`);
          }
          steadyState(shape, o, what);
        },
      ),
      { numRuns: 5 },
    );
    t.pass();
  },
);

/**
 * Milliseconds (virtual) for `size` bytes on a stream `server` opens and the
 * client fills, as a response body flows: from the open to the last byte read.
 */
async function pull(link: SimulatedLink, size: number): Promise<number> {
  const started = link.now;
  let got = 0;
  let done = -1;
  const s = link.server.open("pull");
  s.on("error", () => {});
  s.on("data", (d: Buffer) => {
    got += d.length;
    if (got >= size && done < 0) done = link.now;
  });
  s.write("go");
  while (done < 0) await link.run(link.now + 10);
  s.destroy();
  await link.run(link.now + 100);
  return done - started;
}

t.test("the first stream of a fresh session on a 50 ms link ramps in a few round trips", async (t) => {
  const shape = { rate: 300_000, delay: 25 }; // 300 MB/s, the loopback rate through the bench's delay proxy
  const link = new SimulatedLink(shape);
  link.client.on("stream", (s) => {
    s.on("error", () => {});
    s.once("data", () => {
      let left = 64 * 1024 * 1024;
      const fill = () => {
        while (left > 0) {
          left -= CHUNK.length;
          if (!s.write(CHUNK)) return;
        }
      };
      s.on("drain", fill);
      fill();
    });
  });
  const size = 64 * 1024 * 1024;
  // Without a window: the request's trip, the bytes at the link's rate, the last one's trip.
  const ideal = size / shape.rate + 2 * shape.delay;
  const cold = await pull(link, size);
  const warm = await pull(link, size);
  await link.close();
  t.ok(cold <= 1.6 * ideal, `cold: ${cold} ms, ${(ideal / cold).toFixed(2)} of the ideal ${ideal} ms`);
  t.ok(warm <= 1.05 * ideal, `warm: ${warm} ms, a new stream starts at the session's estimate`);
});

t.test("a fresh session that carries the last one's estimate starts at line rate", async (t) => {
  const shape = { rate: 300_000, delay: 25 };
  const size = 64 * 1024 * 1024;
  const serve = (link: SimulatedLink) =>
    link.client.on("stream", (s) => {
      s.on("error", () => {});
      s.once("data", () => {
        let left = size;
        const fill = () => {
          while (left > 0) {
            left -= CHUNK.length;
            if (!s.write(CHUNK)) return;
          }
        };
        s.on("drain", fill);
        fill();
      });
    });
  const first = new SimulatedLink(shape);
  serve(first);
  await pull(first, size);
  // What the agent keeps for its server and sends in its connect header (the server takes the mirror).
  const carried = first.client.pathEstimate;
  await first.close();
  t.ok(carried, "the first session has an estimate");
  const link = new SimulatedLink(
    shape,
    { pathEstimate: carried! },
    { pathEstimate: mirrorPathEstimate(carried!) },
  );
  serve(link);
  const ideal = size / shape.rate + 2 * shape.delay;
  const cold = await pull(link, size);
  // Aged out by the session's own samples, never dropped (a drop goes back to startup).
  t.equal(link.client.path.phase, "steady", "the carried rate held on the same path");
  await link.close();
  t.ok(cold <= 1.25 * ideal, `carried: ${cold} ms, ${(ideal / cold).toFixed(2)} of the ideal ${ideal} ms`);
});
