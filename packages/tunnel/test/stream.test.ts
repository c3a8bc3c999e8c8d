import { once } from "node:events";
import http from "node:http";
import { PassThrough } from "node:stream";
import { pipeline } from "node:stream/promises";
import t from "tap";
import { encodeData, Flag, FrameType, HEADER_SIZE, parseFrames } from "../src/frame.js";
import { ErrorCode, ResetCode, Session, type TunnelStream } from "../src/index.js";
import { encodeOpenHeader } from "../src/open-header.js";
import { pair, readAll } from "./lib/pair.js";

/** A tunnel whose server side hands every stream to an http.Server, as the agent would to the apiserver. */
function httpOverTunnel(handler: http.RequestListener) {
  const link = pair();
  const server = http.createServer(handler);
  link.server.on("stream", (s) => {
    s.on("error", () => {});
    server.emit("connection", s);
  });
  const agent = new http.Agent({ keepAlive: true });
  // biome-ignore lint/suspicious/noExplicitAny: http's createConnection type wants a net.Socket.
  (agent as any).createConnection = () => link.client.open("kubernetes", { user: "alice" });
  return { link, server, agent };
}

function request(agent: http.Agent, options: http.RequestOptions, body?: string | Buffer) {
  return new Promise<{ res: http.IncomingMessage; body: Buffer }>((resolve, reject) => {
    const req = http.request({ host: "tunnel", agent, ...options }, (res) => {
      readAll(res).then((b) => resolve({ res, body: b }), reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

t.test("http.request and http.Server work over a stream, with keep-alive reuse", async (t) => {
  const { link, agent } = httpOverTunnel((req, res) => {
    readAll(req).then((body) => res.end(`${req.method} ${req.url} ${body.length}`));
  });
  const first = await request(agent, { method: "POST", path: "/api/v1/pods" }, Buffer.alloc(300_000, 1));
  t.equal(first.res.statusCode, 200);
  t.equal(first.body.toString(), "POST /api/v1/pods 300000");
  const second = await request(agent, { path: "/version" });
  t.equal(second.body.toString(), "GET /version 0");
  t.equal(link.client.streamCount, 1, "the keep-alive agent reused one stream");
  agent.destroy();
  link.client.close();
});

t.test("a chunked response streams through while it is being produced", async (t) => {
  let push: ((s: string) => void) | undefined;
  const { link, agent } = httpOverTunnel((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.flushHeaders();
    push = (s) => (s === "" ? res.end() : res.write(s));
  });
  const req = http.request({ host: "tunnel", agent, path: "/api/v1/pods?watch=1" });
  req.end();
  const [res] = (await once(req, "response")) as [http.IncomingMessage];
  t.equal(res.headers["transfer-encoding"], "chunked");
  const events: string[] = [];
  res.setEncoding("utf8");
  res.on("data", (d: string) => events.push(d));
  for (const event of ['{"type":"ADDED"}\n', '{"type":"MODIFIED"}\n']) {
    const seen = events.length;
    push!(event);
    while (events.length === seen) await new Promise((r) => setImmediate(r));
    t.equal(events.at(-1), event, "each event arrives before the response ends");
  }
  push!("");
  await once(res, "end");
  agent.destroy();
  link.client.close();
});

t.test("an upgrade hands the raw stream to both sides, like exec", async (t) => {
  const { link, server, agent } = httpOverTunnel(() => t.fail("not a plain request"));
  server.on("upgrade", (req, socket, head) => {
    t.equal(req.headers.upgrade, "SPDY/3.1");
    socket.write("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n");
    if (head.length > 0) socket.write(head);
    socket.pipe(socket); // echo
  });
  const req = http.request({
    host: "tunnel",
    agent,
    method: "POST",
    path: "/api/v1/namespaces/default/pods/p/exec",
    headers: { connection: "Upgrade", upgrade: "SPDY/3.1" },
  });
  req.end();
  const [res, socket] = (await once(req, "upgrade")) as [http.IncomingMessage, TunnelStream];
  t.equal(res.statusCode, 101);
  socket.end("ping over the raw stream");
  t.equal((await readAll(socket)).toString(), "ping over the raw stream");
  agent.destroy();
  link.client.close();
});

t.test("pipeline through a stream carries a large body both ways with backpressure", async (t) => {
  const link = pair();
  link.server.on("stream", (s) => {
    // Echo with a slow-ish transform in the middle so backpressure has to hold.
    const slow = new PassThrough({ highWaterMark: 1024 });
    pipeline(s, slow, s).catch((err) => t.fail(String(err)));
  });
  const s = link.client.open("echo");
  const body = Buffer.alloc(3 * 1024 * 1024);
  for (let i = 0; i < body.length; i++) body[i] = (i * 13) & 0xff;
  const [echoed] = await Promise.all([readAll(s), pipeline(PassThroughOf(body), s)]);
  t.ok(echoed.equals(body), "every byte came back in order");
  link.client.close();
});

function PassThroughOf(buf: Buffer): PassThrough {
  const p = new PassThrough();
  for (let i = 0; i < buf.length; i += 100_000) p.write(buf.subarray(i, i + 100_000));
  p.end();
  return p;
}

t.test("end() half-closes: the other direction keeps flowing", async (t) => {
  const link = pair();
  link.server.on("stream", async (s) => {
    const got = await readAll(s); // ends when the client half-closes
    s.write("after your FIN, ");
    s.end(`I got ${got}`);
  });
  const s = link.client.open("svc");
  s.end("request");
  t.equal((await readAll(s)).toString(), "after your FIN, I got request");
  if (!s.closed) await once(s, "close");
  t.equal(link.client.streamCount, 0);
  link.client.close();
});

t.test(
  "destroy() resets the peer with CANCEL, destroy(err) with the error's code, reset(code) with code",
  async (t) => {
    const link = pair();
    const remotes: TunnelStream[] = [];
    link.server.on("stream", (s) => remotes.push(s));
    const cases: Array<[(s: TunnelStream) => void, number]> = [
      [(s) => s.destroy(), ResetCode.CANCEL],
      [(s) => s.destroy(new Error("boom")), ResetCode.INTERNAL_ERROR],
      [
        (s) => s.destroy(Object.assign(new Error("refused"), { resetCode: ResetCode.CONNECT_FAILED })),
        ResetCode.CONNECT_FAILED,
      ],
      [(s) => s.reset(0x1234), 0x1234],
    ];
    for (const [act, code] of cases) {
      const s = link.client.open("svc");
      s.on("error", () => {});
      s.write("x");
      while (remotes.length === 0) await new Promise((r) => setImmediate(r));
      const remote = remotes.pop()!;
      act(s);
      const [err] = await once(remote, "error");
      t.equal(err.code, ErrorCode.STREAM_RESET);
      t.equal(err.resetCode, code);
    }
    t.throws(() => link.client.open("svc").reset(0), RangeError);
    link.client.close();
  },
);

t.test("setTimeout emits 'timeout' after idleness like a socket, and 0 turns it off", async (t) => {
  const link = pair();
  link.server.on("stream", (s) => s.resume());
  const s = link.client.open("svc");
  // Stream timers are unref'd like a socket's; hold the loop open while waiting.
  const hold = setInterval(() => {}, 1000);
  let fired = 0;
  s.setTimeout(5, () => fired++);
  s.write("activity");
  await once(s, "timeout");
  t.equal(fired, 1, "the callback ran once");
  s.setTimeout(5);
  s.setTimeout(0);
  await new Promise((r) => setTimeout(r, 30));
  t.equal(fired, 1, "a cleared timeout never fires");
  clearInterval(hold);
  t.equal(s.setNoDelay(true), s);
  t.equal(s.setKeepAlive(true, 1000), s);
  t.equal(s.ref().unref(), s);
  t.same(s.address(), {});
  s.destroySoon();
  await once(s, "close");
  t.ok(s.writableFinished, "destroySoon flushed the write side first");
  link.client.close();
});

t.test("stream metadata and identity are visible on both ends", async (t) => {
  const link = pair();
  const accepted = once(link.server, "stream");
  const s = link.client.open("kubernetes", { user: "alice", groups: "dev,ops" });
  const [remote] = (await accepted) as [TunnelStream];
  t.equal(s.id % 2, 1, "client streams are odd");
  t.equal(remote.id, s.id);
  t.equal(remote.service, "kubernetes");
  t.same(remote.metadata, { user: "alice", groups: "dev,ops" });
  t.equal(remote.initiator, "remote");
  t.equal(s.initiator, "local");
  const fromServer = link.server.open("logs");
  t.equal(fromServer.id % 2, 0, "server streams are even");
  fromServer.on("error", () => {});
  remote.on("error", () => {});
  link.client.close();
});

t.test("small writes queued behind each other leave in full frames, not one frame each", async (t) => {
  const link = pair();
  const dataFrames: number[] = [];
  const receive = link.server.receive.bind(link.server);
  link.server.receive = (message) => {
    parseFrames(message, (f) => {
      if (f.type === FrameType.DATA && (f.flags & Flag.SYN) === 0 && f.length > 0) dataFrames.push(f.length);
      return true;
    });
    receive(message);
  };
  const received = new Promise<Buffer>((resolve) => link.server.once("stream", (s) => resolve(readAll(s))));
  const s = link.client.open("logs");
  const chunks = Array.from({ length: 16 }, (_, i) => Buffer.alloc(16 * 1024, i));
  // 16 KiB at a time, as an http response relays TLS reads, all queued before the session runs.
  for (const chunk of chunks) s.write(chunk);
  s.end();
  t.ok((await received).equals(Buffer.concat(chunks)), "256 KiB arrive intact and in order");
  t.same(dataFrames, [65536, 65536, 65536, 65536], "four 64 KiB frames for sixteen 16 KiB writes");
  link.client.close();
});

t.test("tiny writes queued together leave as one small frame", async (t) => {
  const link = pair();
  const dataFrames: number[] = [];
  const receive = link.server.receive.bind(link.server);
  link.server.receive = (message) => {
    parseFrames(message, (f) => {
      if (f.type === FrameType.DATA && (f.flags & Flag.SYN) === 0 && f.length > 0) dataFrames.push(f.length);
      return true;
    });
    receive(message);
  };
  const received = new Promise<Buffer>((resolve) => link.server.once("stream", (s) => resolve(readAll(s))));
  const s = link.client.open("logs");
  s.write(Buffer.from("a"));
  s.write(Buffer.from("b"));
  s.end(Buffer.from("c"));
  t.equal((await received).toString(), "abc");
  t.same(dataFrames, [3], "one frame of three bytes");
  link.client.close();
});

t.test(
  "a reader that does not read holds its window, not the socket buffers tiny pieces came in",
  async (t) => {
    const sent: Buffer[] = [];
    const session = new Session(
      { send: (m, done) => (sent.push(m), setImmediate(done)), close: () => {} },
      { role: "client", keepAliveInterval: 0, deadPeerTimeout: 0 },
    );
    const streams: TunnelStream[] = [];
    session.on("stream", (s) => streams.push(s));
    session.receive(encodeData(Flag.SYN, 2, encodeOpenHeader("never-read", {})));
    session.receive(encodeData(Flag.SYN, 4, encodeOpenHeader("paused", {})));
    const [quiet, paused] = streams as [TunnelStream, TunnelStream];
    paused.on("data", () => {});
    paused.pause();
    await new Promise((r) => setImmediate(r));
    // Each 1-byte payload is a view of its own 64 KiB buffer, as socket reads that share slabs with other streams' data.
    const pieces = 2000;
    for (let i = 0; i < pieces; i++) {
      for (const id of [2, 4]) {
        const slab = Buffer.alloc(64 * 1024);
        const frame = encodeData(0, id, Buffer.from([i & 0xff]));
        frame.copy(slab, 1000);
        session.receive([
          slab.subarray(1000, 1000 + HEADER_SIZE),
          slab.subarray(1000 + HEADER_SIZE, 1000 + frame.length),
        ]);
      }
    }
    const held = (chunks: Iterable<Buffer>) => {
      const buffers = new Set<ArrayBufferLike>();
      let bytes = 0;
      for (const c of chunks) {
        buffers.add(c.buffer);
        bytes += c.length;
      }
      let pinned = 0;
      for (const b of buffers) pinned += b.byteLength;
      return { bytes, pinned };
    };
    const inbox = held((quiet as unknown as { inbox: Buffer[] }).inbox);
    const readable = held(
      (paused as unknown as { _readableState: { buffer: Iterable<Buffer> } })._readableState.buffer,
    );
    t.equal(inbox.bytes, pieces, "the unread stream holds every byte");
    // Small copies share Node's allocation pool; without them this would be 2000 slabs, 125 MiB.
    t.ok(inbox.pinned < 1024 * 1024, `in ${inbox.pinned} bytes of buffers, not ${pieces} slabs`);
    t.ok(readable.bytes > 0, `the paused reader's buffer holds ${readable.bytes} bytes`);
    t.ok(readable.pinned < 1024 * 1024, `in ${readable.pinned} bytes of buffers`);
    session.close();
  },
);
