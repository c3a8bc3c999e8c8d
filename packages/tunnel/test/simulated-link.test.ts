/**
 * Sessions over a simulated bottleneck (virtual clock, bandwidth, delay and a
 * queue in front of the bottleneck, see lib/simulated-link.ts): one bulk stream
 * saturates the client→server direction, a stalled reader holds a second, and
 * the server makes small request/response round trips to the client on a third.
 */

import fc from "fast-check";
import t from "tap";
import { FrameType, HEADER_SIZE } from "../src/frame.js";
import { CAP_FLOOR, SMALL_ALLOWANCE } from "../src/path-estimator.js";
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
}

async function scenario(shape: Shape): Promise<Outcome> {
  const link = new SimulatedLink(shape);
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
        if (started >= WARM_UP) smallRtts.push(link.now - started);
        s.destroy();
        if (link.now < DURATION - 1000) link.at(link.now + 50, small);
      }
    });
  };
  link.at(100, small);
  const queueMs: number[] = [];
  const capOverBdp: number[] = [];
  const bdp = shape.rate * 2 * shape.delay;
  for (let at = WARM_UP; at < DURATION; at += 10) {
    link.at(at, () => {
      if (at === WARM_UP) receivedAtWarmUp = received;
      queueMs.push(link.queued(link.toServer) / shape.rate);
      capOverBdp.push(client.path.cap / bdp);
    });
  }
  await link.run(DURATION, () => {
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
    bulkRate: (received - receivedAtWarmUp) / (DURATION - WARM_UP),
    queueMs,
    smallRtts,
    capOverBdp,
    violations,
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
        async (shape) => {
          const o = await scenario(shape);
          const rtt = 2 * shape.delay;
          const what = `${JSON.stringify(shape)}`;
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
        },
      ),
      { numRuns: 12 },
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
