import { once } from "node:events";
import fc from "fast-check";
import t from "tap";
import { encodeControl, encodeData, Flag, FrameType } from "../src/frame.js";
import {
  ErrorCode,
  INITIAL_WINDOW,
  ResetCode,
  Session,
  type TetherError,
  type Transport,
  type TunnelStream,
} from "../src/index.js";
import { encodeOpenHeader } from "../src/open-header.js";
import { INITIAL_CAP } from "../src/path-estimator.js";
import { type Link, pair, readAll } from "./lib/pair.js";

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Resolves with the session's close reason (events.once would reject on 'error'). */
const closed = (session: Session) =>
  new Promise<TetherError | undefined>((resolve) => session.once("close", resolve));

function pattern(seed: number, offset: number, length: number): Buffer {
  const buf = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) buf[i] = (seed * 131 + (offset + i) * 7 + ((offset + i) >> 8)) & 0xff;
  return buf;
}

/** Peeks at the session's table; tests only. */
function streamsOf(session: Session): Map<number, TunnelStream> {
  return (session as unknown as { streams: Map<number, TunnelStream> }).streams;
}

function checkWindows(link: Link): void {
  for (const session of [link.client, link.server]) {
    for (const stream of streamsOf(session).values()) {
      const w = stream.recvWindow;
      if (w.credit < 0 || w.buffered < 0 || w.pending < 0 || stream.sendWindow < 0) {
        throw new Error(
          `negative window on stream ${stream.id}: ${JSON.stringify(w)} send=${stream.sendWindow}`,
        );
      }
      if (w.credit + w.buffered + w.pending !== w.size) throw new Error(`window leak on stream ${stream.id}`);
    }
  }
}

/** A data-direction plan for one stream. */
const direction = fc.record({
  chunks: fc.array(fc.integer({ min: 0, max: 48 * 1024 }), { maxLength: 10 }),
  pauseEvery: fc.integer({ min: 0, max: 4 }),
});

const streamPlan = fc.record({
  opener: fc.constantFrom("client" as const, "server" as const),
  up: direction,
  down: direction,
  reset: fc.option(
    fc.record({ by: fc.constantFrom("opener" as const, "acceptor" as const), after: fc.nat(6) }),
    { nil: undefined, freq: 4 },
  ),
});

interface Outcome {
  received: Buffer;
  error?: TetherError;
}

async function writeChunks(
  stream: TunnelStream,
  seed: number,
  chunks: number[],
  resetAfter: number | undefined,
): Promise<void> {
  let offset = 0;
  for (let i = 0; i < chunks.length; i++) {
    if (resetAfter === i) {
      stream.reset(ResetCode.APPLICATION_MIN + 1);
      return;
    }
    if (stream.destroyed) return;
    const size = chunks[i]!;
    const ok = stream.write(pattern(seed, offset, size));
    offset += size;
    // once() rejects on 'error': a reset from the peer while waiting errors the stream, which
    // collect() records; the writer just stops.
    if (!ok) await Promise.race([once(stream, "drain"), once(stream, "close")]).catch(() => {});
    if (i % 2 === 0) await tick();
  }
  if (resetAfter !== undefined && resetAfter >= chunks.length) {
    stream.reset(ResetCode.APPLICATION_MIN + 1);
    return;
  }
  if (!stream.destroyed) stream.end();
}

function collect(stream: TunnelStream, pauseEvery: number): Promise<Outcome> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let error: TetherError | undefined;
    stream.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      if (pauseEvery > 0 && chunks.length % pauseEvery === 0) {
        stream.pause();
        setImmediate(() => setImmediate(() => stream.resume()));
      }
    });
    stream.on("error", (err) => (error = err as TetherError));
    stream.on("close", () => resolve({ received: Buffer.concat(chunks), ...(error ? { error } : {}) }));
  });
}

t.test("random interleavings deliver every byte in order exactly once", async (t) => {
  await fc.assert(
    fc.asyncProperty(fc.array(streamPlan, { minLength: 1, maxLength: 8 }), async (plans) => {
      const link = pair({ maxFrameSize: 16 * 1024 }, { maxFrameSize: 4 * 1024 });
      const watcher = setInterval(() => checkWindows(link), 1);
      const accepted = new Map<string, (s: TunnelStream) => void>();
      for (const session of [link.client, link.server]) {
        session.on("stream", (s) => accepted.get(s.metadata.idx!)?.(s));
      }
      try {
        const runs = plans.map(async (plan, idx) => {
          const opener = plan.opener === "client" ? link.client : link.server;
          const acceptorReady = new Promise<TunnelStream>((resolve) => accepted.set(String(idx), resolve));
          const local = opener.open("svc", { idx: String(idx) });
          const localOutcome = collect(local, plan.down.pauseEvery);
          const remote = await acceptorReady;
          const remoteOutcome = collect(remote, plan.up.pauseEvery);
          const resetUp = plan.reset?.by === "opener" ? plan.reset.after : undefined;
          const resetDown = plan.reset?.by === "acceptor" ? plan.reset.after : undefined;
          await Promise.all([
            writeChunks(local, idx * 2, plan.up.chunks, resetUp),
            writeChunks(remote, idx * 2 + 1, plan.down.chunks, resetDown),
          ]);
          const [atOpener, atAcceptor] = await Promise.all([localOutcome, remoteOutcome]);
          const up = pattern(idx * 2, 0, sum(plan.up.chunks));
          const down = pattern(idx * 2 + 1, 0, sum(plan.down.chunks));
          if (plan.reset === undefined) {
            if (atOpener.error) throw atOpener.error;
            if (atAcceptor.error) throw atAcceptor.error;
            if (!atAcceptor.received.equals(up)) throw new Error(`stream ${idx}: upstream bytes differ`);
            if (!atOpener.received.equals(down)) throw new Error(`stream ${idx}: downstream bytes differ`);
          } else {
            // A reset may cut the stream anywhere, but what arrived is an in-order prefix.
            if (!up.subarray(0, atAcceptor.received.length).equals(atAcceptor.received)) {
              throw new Error(`stream ${idx}: upstream prefix differs`);
            }
            if (!down.subarray(0, atOpener.received.length).equals(atOpener.received)) {
              throw new Error(`stream ${idx}: downstream prefix differs`);
            }
            const victim = plan.reset.by === "opener" ? atAcceptor : atOpener;
            if (victim.error !== undefined) {
              if (victim.error.code !== ErrorCode.STREAM_RESET) throw victim.error;
              if (victim.error.resetCode !== ResetCode.APPLICATION_MIN + 1)
                throw new Error("wrong reset code");
            }
          }
        });
        await Promise.all(runs);
        checkWindows(link);
        if (link.client.streamCount !== 0 || link.server.streamCount !== 0) {
          throw new Error(`streams left open: ${link.client.streamCount}/${link.server.streamCount}`);
        }
      } finally {
        clearInterval(watcher);
        link.client.close();
        link.server.close();
      }
    }),
    { numRuns: 40 },
  );
  t.pass("40 random schedules checked");
});

function sum(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

t.test("go-away refuses new streams and lets open ones finish", async (t) => {
  const link = pair();
  const served: Promise<void>[] = [];
  link.server.on("stream", (s) => {
    served.push(
      readAll(s).then((body) => {
        s.end(`echo:${body}`);
      }),
    );
  });
  const streams = [link.client.open("svc"), link.client.open("svc"), link.client.open("svc")];
  await tick();
  await tick();
  t.equal(link.server.streamCount, 3);
  const goaway = once(link.client, "goaway");
  link.server.goAway();
  const [code, lastId] = await goaway;
  t.equal(code, 0);
  t.equal(lastId, 5, "go-away names the last stream the server accepted");
  t.ok(link.client.goingAway);

  const late = link.client.open("svc");
  const [lateErr] = await once(late, "error");
  t.equal(lateErr.code, ErrorCode.GOING_AWAY);

  const closes = [closed(link.client), closed(link.server)];
  const replies = streams.map((s, i) => {
    s.end(`body${i}`);
    return readAll(s);
  });
  t.same((await Promise.all(replies)).map(String), ["echo:body0", "echo:body1", "echo:body2"]);
  const [clientErr, serverErr] = await Promise.all(closes);
  t.equal(clientErr, undefined, "client closed cleanly");
  t.equal(serverErr, undefined, "server closed cleanly");
});

t.test("streams opened before the go-away arrives and above its id fail as retryable", async (t) => {
  const link = pair();
  link.server.on("stream", () => {});
  const closes = Promise.all([closed(link.client), closed(link.server)]);
  link.server.goAway();
  const s = link.client.open("svc"); // crosses the go-away on the wire
  const [err] = await once(s, "error");
  t.equal(err.code, ErrorCode.GOING_AWAY);
  t.same(await closes, [undefined, undefined], "both ends close cleanly");
});

t.test("the accept hook refuses with a reset code, and no acceptor refuses too", async (t) => {
  const link = pair(
    {},
    {
      accept: (req) => {
        if (req.service === "kubernetes") return true;
        if (req.service === "teapot") return ResetCode.APPLICATION_MIN + 18;
        if (req.service === "boom") throw new Error("hook bug");
        return false;
      },
    },
  );
  const seen: string[] = [];
  link.server.on("stream", (s) => {
    seen.push(`${s.service}:${s.metadata.user}`);
    s.end();
  });
  const expectReset = async (service: string, code: number) => {
    const s = link.client.open(service);
    s.resume();
    const [err] = await once(s, "error");
    t.equal(err.code, ErrorCode.STREAM_RESET, service);
    t.equal(err.resetCode, code, `${service} refused with ${code}`);
  };
  await expectReset("ssh", ResetCode.REFUSED);
  await expectReset("teapot", ResetCode.APPLICATION_MIN + 18);
  await expectReset("boom", ResetCode.INTERNAL_ERROR);
  const ok = link.client.open("kubernetes", { user: "alice" });
  ok.end();
  await readAll(ok);
  t.same(seen, ["kubernetes:alice"]);

  const lonely = pair();
  const s = lonely.client.open("kubernetes");
  const [err] = await once(s, "error");
  t.equal(err.resetCode, ResetCode.REFUSED, "no 'stream' listener and no hook: refused");
  link.client.close();
  lonely.client.close();
});

t.test("the stream cap refuses opens on both sides", async (t) => {
  const link = pair({ maxStreams: 2 }, { maxStreams: 3 });
  link.server.on("stream", (s) => s.on("error", () => {}));
  const a = link.client.open("svc");
  const b = link.client.open("svc");
  const c = link.client.open("svc");
  const [localErr] = await once(c, "error");
  t.equal(localErr.code, ErrorCode.STREAM_LIMIT, "the opener enforces its own cap");
  t.equal(link.client.streamCount, 2);
  // The server's cap applies to its table: fill it from its own side, then the client's open is reset.
  link.client.on("stream", (s) => s.on("error", () => {}));
  const link2 = pair({}, { maxStreams: 1 });
  link2.server.on("stream", (s) => s.on("error", () => {}));
  link2.client.open("svc");
  const refused = link2.client.open("svc");
  const [remoteErr] = await once(refused, "error");
  t.equal(remoteErr.resetCode, ResetCode.STREAM_LIMIT, "the acceptor refuses past its cap");
  a.destroy();
  b.destroy();
  await tick();
  await tick();
  t.equal(link.client.streamCount, 0, "destroyed streams leave the table");
  t.equal(link.server.streamCount, 0, "and the peer's table, via reset");
  link.client.close();
  link2.client.close();
});

t.test("a paused reader holds at most its window and the sender stops", async (t) => {
  const link = pair();
  let remote: TunnelStream | undefined;
  link.server.on("stream", (s) => {
    remote = s;
    s.pause();
    s.on("error", () => {});
  });
  const s = link.client.open("svc");
  let written = 0;
  const chunk = Buffer.alloc(16 * 1024, 1);
  // Keep writing until the writable side reports backpressure and nothing moves any more.
  for (let i = 0; i < 200; i++) {
    while (s.write(chunk)) written += chunk.length;
    written += chunk.length;
    await tick();
  }
  t.ok(remote, "accepted");
  t.equal(s.sendWindow, 0, "the sender ran out of credit");
  const held = remote!.bufferedInbound + remote!.readableLength;
  const window = remote!.recvWindow.size;
  t.ok(held <= window + remote!.readableHighWaterMark, `receiver holds ${held} bytes, window ${window}`);
  t.ok(written > window * 2, "the writer had far more to send");
  const before = link.sent.toServer;
  for (let i = 0; i < 20; i++) await tick();
  t.equal(link.sent.toServer, before, "nothing more is sent while the reader is paused");
  // Resuming lets everything through.
  let got = 0;
  remote!.on("data", (c: Buffer) => (got += c.length));
  remote!.resume();
  s.end();
  await once(remote!, "end");
  t.equal(got, written);
  link.client.close();
});

t.test("windows grow while the reader keeps up with the link", async (t) => {
  const link = pair();
  let remote: TunnelStream | undefined;
  link.server.on("stream", (s) => {
    remote = s;
    s.resume();
    s.on("error", () => {});
  });
  const s = link.client.open("svc");
  // Long enough to span several window rounds (at least one 10 ms min RTT each) on an in-memory link.
  s.end(Buffer.alloc(64 * 1024 * 1024));
  await once(s, "finish");
  await tick();
  t.ok(remote!.recvWindow.size > INITIAL_WINDOW, `grew to ${remote!.recvWindow.size}`);
  t.ok(remote!.recvWindow.size <= link.server.maxWindow, "within the cap");
  link.client.close();
});

t.test("stalled readers pin at most the session budget; other streams still flow", async (t) => {
  const MiB = 1024 * 1024;
  const budget = 6 * MiB;
  const link = pair({}, { maxWindow: 4 * MiB, maxSessionWindow: budget });
  const remotes: TunnelStream[] = [];
  let stall = false;
  link.server.on("stream", (s) => {
    remotes.push(s);
    s.on("error", () => {});
    s.on("end", () => s.end()); // a finished request gets its (empty) answer, closing the stream
    if (stall) s.pause();
    else s.resume();
  });
  const fast = link.client.open("svc");
  fast.end(Buffer.alloc(16 * MiB));
  await once(fast, "finish");
  await tick();
  // Say the path estimate grants every new stream the largest window...
  Object.defineProperty(link.server, "initialWindow", { get: () => 4 * MiB });
  // ...then five streams whose readers never read try to fill everything they are given.
  stall = true;
  const stalled = Array.from({ length: 5 }, () => link.client.open("svc"));
  for (const s of stalled) {
    s.on("error", () => {});
    s.write(Buffer.alloc(8 * MiB));
  }
  for (let i = 0; i < 50; i++) await tick();
  const stuck = remotes.slice(1);
  const held = stuck.map((r) => r.bufferedInbound + r.readableLength);
  for (const [i, r] of stuck.entries()) {
    t.ok(held[i]! <= r.recvWindow.size + r.readableHighWaterMark, `stream ${r.id} holds ${held[i]}`);
  }
  const total = held.reduce((a, b) => a + b, 0);
  const bound = budget + stuck.length * (INITIAL_WINDOW + stuck[0]!.readableHighWaterMark);
  t.ok(total <= bound, `all stalled readers hold ${total} <= ${bound}`);
  t.ok(link.server.windowBudget.claimed <= budget, "the budget is never exceeded");
  // A stream opened now still gets its 256 KiB window and finishes.
  stall = false;
  const late = link.client.open("svc");
  late.end(Buffer.alloc(2 * MiB));
  await once(late, "finish");
  t.pass("a new stream finishes while the budget is spent");
  // Ending the stalled streams gives their share back.
  for (const s of stalled) s.destroy();
  for (let i = 0; i < 10; i++) await tick();
  t.equal(link.server.streamCount, 0, "all streams gone");
  t.equal(link.server.windowBudget.claimed, 0, "and the whole budget is back");
  link.client.close();
});

t.test("the scheduler is fair: a bulk stream does not starve a small one", async (t) => {
  const order: number[] = [];
  const link = pair({ transportHighWaterMark: 64 * 1024 });
  link.server.on("stream", (s) => s.resume().on("error", () => {}));
  const rawSend = (link.client as unknown as { transport: Transport }).transport;
  const send = rawSend.send.bind(rawSend);
  rawSend.send = (message, done) => {
    const isData = message[1] === FrameType.DATA && (message.readUInt16BE(2) & Flag.SYN) === 0;
    if (isData && message.readUInt32BE(8) > 0) order.push(message.readUInt32BE(4));
    send(message, done);
  };
  const bulk = link.client.open("svc");
  const small = link.client.open("svc");
  bulk.write(Buffer.alloc(200 * 1024));
  small.write(Buffer.alloc(200 * 1024));
  bulk.end();
  small.end();
  await Promise.all([once(bulk, "finish"), once(small, "finish")]);
  // While both had data and credit, frames alternated.
  const firstSmall = order.indexOf(small.id);
  t.ok(firstSmall >= 0 && firstSmall <= 1, "the second stream gets the second frame");
  let longestRun = 0;
  let run = 0;
  const lastSmall = order.lastIndexOf(small.id);
  for (let i = 0; i <= lastSmall; i++) {
    run = order[i] === bulk.id ? run + 1 : 0;
    longestRun = Math.max(longestRun, run);
  }
  t.ok(longestRun <= 1, `bulk never sent two frames in a row while the other waited (longest ${longestRun})`);
  link.client.close();
});

t.test("a silent peer is declared dead; traffic of any kind keeps it alive", async (t) => {
  // The timeout is generous so a loaded machine does not trip it while pongs flow; the test
  // counts round trips rather than waiting for wall-clock time.
  const options = { keepAliveInterval: 5, deadPeerTimeout: 400 };
  const link = pair(options, options);
  link.server.on("stream", (s) => s.on("error", () => {}));
  const s = link.client.open("svc");
  s.on("error", () => {});
  let pongs = 0;
  for (let i = 0; i < 20; i++) if ((await link.client.ping()) >= 0) pongs++;
  t.equal(pongs, 20, "twenty round trips");
  t.type(link.client.rtt, "number", "pings measure the round trip");
  t.notOk(link.client.closed, "alive while pongs flow");
  const done = closed(link.client);
  link.cut();
  // Session timers are unref'd (the socket keeps a real process alive); hold the loop open here.
  const hold = setInterval(() => {}, 1000);
  const err = await done;
  clearInterval(hold);
  t.equal(err?.code, ErrorCode.KEEPALIVE_TIMEOUT);
  t.equal(s.destroyed, true, "its streams fail with it");
  link.server.close();
});

/** A session fed raw frames by the test, recording what it sends. */
function bare(role: "client" | "server", options: object = {}) {
  const out: Buffer[] = [];
  const transport: Transport = {
    send: (m, done) => {
      out.push(Buffer.from(m)); // the session reuses `m` after done
      process.nextTick(done);
    },
    close: () => {},
  };
  const session = new Session(transport, { role, keepAliveInterval: 0, deadPeerTimeout: 0, ...options });
  let closeErr: TetherError | undefined | null = null;
  session.on("close", (e) => (closeErr = e));
  session.on("error", () => {});
  return {
    session,
    out,
    closeError: () => closeErr,
    syn: (id: number, service = "svc") =>
      session.receive(encodeData(Flag.SYN, id, encodeOpenHeader(service))),
  };
}

const violations: Array<[string, (b: ReturnType<typeof bare>) => void]> = [
  ["bad version", (b) => b.session.receive(Buffer.from([9, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]))],
  ["unknown type", (b) => b.session.receive(Buffer.from([1, 7, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]))],
  ["truncated", (b) => b.session.receive(Buffer.from([1, 0, 0]))],
  ["data for an unopened stream", (b) => b.session.receive(encodeData(0, 7, Buffer.from("x")))],
  ["our parity", (b) => b.syn(2)],
  [
    "duplicate SYN",
    (b) => {
      b.syn(1);
      b.syn(1);
    },
  ],
  [
    "decreasing ids",
    (b) => {
      b.syn(5);
      b.syn(3);
    },
  ],
  [
    "past the window",
    (b) => {
      b.syn(1);
      for (const f of huge(1)) b.session.receive(f);
    },
  ],
  [
    "data after FIN",
    (b) => {
      b.syn(1);
      b.session.receive(encodeData(Flag.FIN, 1, undefined));
      b.session.receive(encodeData(0, 1, Buffer.from("x")));
    },
  ],
  [
    "window overflow",
    (b) => {
      b.syn(1);
      b.session.receive(encodeControl(FrameType.WINDOW_UPDATE, 0, 1, 2 ** 31));
    },
  ],
  [
    "ACK on an accepted stream",
    (b) => {
      b.syn(1);
      b.session.receive(encodeControl(FrameType.WINDOW_UPDATE, Flag.ACK, 1, 0));
    },
  ],
];

function huge(id: number): Buffer[] {
  const frames: Buffer[] = [];
  // Past the largest window a fresh session grants a stream (ACK included).
  for (let sent = 0; sent <= INITIAL_CAP; sent += 65536) frames.push(encodeData(0, id, Buffer.alloc(65536)));
  return frames;
}

for (const [name, act] of violations) {
  t.test(`protocol violation closes the session: ${name}`, async (t) => {
    const b = bare("server");
    b.session.on("stream", (s) => s.on("error", () => {}));
    act(b);
    const err = b.closeError() as TetherError | undefined | null;
    t.equal(err?.code, ErrorCode.PROTOCOL, String(err?.message));
    const goAway = b.out.find((m) => m[1] === FrameType.GO_AWAY);
    t.ok(goAway, "a go-away was sent");
    t.equal(goAway?.readUInt32BE(8), 1, "with the protocol-error code");
  });
}

t.test("frames for closed streams are dropped; a malformed open header only resets its stream", async (t) => {
  const b = bare("server");
  b.session.on("stream", (s) => s.destroy());
  b.syn(1);
  b.session.receive(encodeData(0, 1, Buffer.from("late")));
  b.session.receive(encodeControl(FrameType.WINDOW_UPDATE, 0, 1, 10));
  b.session.receive(encodeData(Flag.SYN, 3, Buffer.from([0])));
  t.equal(b.closeError(), null, "session still open");
  await tick();
  const resets = b.out
    .flatMap((m) => split(m))
    .filter((f) => f[1] === FrameType.WINDOW_UPDATE && (f.readUInt16BE(2) & Flag.RST) !== 0)
    .map((f) => [f.readUInt32BE(4), f.readUInt32BE(8)]);
  t.same(resets, [
    [1, ResetCode.CANCEL],
    [3, ResetCode.PROTOCOL_ERROR],
  ]);
  b.session.close();
});

t.test("a ping flood gets one answer per batch", async (t) => {
  const b = bare("server");
  for (let i = 0; i < 10_000; i++) b.session.receive(encodeControl(FrameType.PING, Flag.SYN, 0, i));
  await tick();
  const pongs = b.out.flatMap((m) => split(m)).filter((f) => f[1] === FrameType.PING);
  t.equal(pongs.length, 1, "one pong");
  t.equal(pongs[0]?.readUInt32BE(8), 9999, "answering the latest ping");
  b.session.close();
});

t.test("a peer that opens streams but never reads is cut off", async (t) => {
  const stuck: Transport = { send: () => {}, close: () => {} };
  const session = new Session(stuck, { role: "server", keepAliveInterval: 0, transportHighWaterMark: 1024 });
  const done = closed(session);
  // Every refused open queues a reset; with the transport stuck they pile up until the cap ends it.
  let id = 1;
  for (let i = 0; i < 200_000 && !session.closed; i++, id += 2) {
    session.receive(encodeData(Flag.SYN, id, encodeOpenHeader("svc")));
  }
  const err = await done;
  t.equal(err?.code, ErrorCode.CONTROL_OVERFLOW);
});

function split(message: Buffer): Buffer[] {
  const frames: Buffer[] = [];
  let o = 0;
  while (o < message.length) {
    const len = message[o + 1] === FrameType.DATA ? message.readUInt32BE(o + 8) : 0;
    frames.push(message.subarray(o, o + 12 + len));
    o += 12 + len;
  }
  return frames;
}

t.test("open validates its arguments and fails fast on a closed session", async (t) => {
  const link = pair();
  t.throws(() => link.client.open("bad service"), { code: ErrorCode.INVALID_ARGUMENT });
  t.throws(() => link.client.open("svc", { Bad: "x" }), { code: ErrorCode.INVALID_ARGUMENT });
  link.client.close();
  const s = link.client.open("svc");
  const [err] = await once(s, "error");
  t.equal(err.code, ErrorCode.SESSION_CLOSED);
  await t.rejects(link.client.ping(), { code: ErrorCode.SESSION_CLOSED });
});

t.test("close() aborts open streams and the peer's fail", async (t) => {
  const link = pair();
  let remote: TunnelStream | undefined;
  link.server.on("stream", (s) => (remote = s));
  const s = link.client.open("svc");
  s.write("hello");
  await tick();
  await tick();
  const localClose = once(s, "close");
  const remoteErr = once(remote!, "error");
  s.on("error", (err) => t.fail(`local close() aborts quietly, got ${err}`));
  link.client.close();
  await localClose;
  t.notOk(s.readableEnded, "the local stream was aborted, not ended");
  t.equal((await remoteErr)[0].code, ErrorCode.TRANSPORT_CLOSED, "the peer's stream fails");
  t.ok(link.server.closed);
});

t.test("bytesSent and bytesReceived count every frame byte each way", async (t) => {
  const link = pair();
  link.server.on("stream", (stream) => {
    stream.resume();
    stream.on("end", () => stream.end());
  });
  const before = { sent: link.client.bytesSent, received: link.server.bytesReceived };
  const stream = link.client.open("count");
  stream.end(Buffer.alloc(100_000, 1));
  stream.resume();
  await once(stream, "end");
  // Probes and their answers may still be on the way: let the link go quiet.
  const quiet = () =>
    link.client.bytesReceived === link.server.bytesSent &&
    link.server.bytesReceived === link.client.bytesSent;
  for (let i = 0; i < 100 && !quiet(); i++) await tick();
  // 100,000 payload bytes need at least two 64 KiB frames, each with a 12-byte header, plus SYN and FIN.
  t.ok(link.client.bytesSent - before.sent >= 100_000 + 4 * 12, "sender counted payload and headers");
  t.equal(
    link.server.bytesReceived - before.received,
    link.client.bytesSent - before.sent,
    "both ends agree",
  );
  t.ok(link.server.bytesSent > 0 && link.client.bytesReceived === link.server.bytesSent, "the other way too");
  link.client.close();
  link.server.close();
});

t.test("bytesReceived counts a message given as parts by its bytes, not its parts", async (t) => {
  const session = new Session(
    { send: (_m, done) => done(), close: () => {} },
    { role: "server", keepAliveInterval: 0, deadPeerTimeout: 0 },
  );
  const ping = encodeControl(FrameType.PING, Flag.SYN, 0, 7);
  session.receive([ping.subarray(0, 5), ping.subarray(5)]);
  t.equal(session.bytesReceived, ping.length);
  session.close();
});
