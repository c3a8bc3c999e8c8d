/**
 * One end of the tunnel benchmark, run as a child process (`server` or
 * `agent`) so each end has its own event loop, as in production. The parent
 * drives it over IPC: { id, cmd, ...args } in, { id, result } or { id, error } out.
 *
 * Both the direct TLS baseline and the tunnel speak the same tiny protocol on
 * a connection or stream: "S" + u64 size then that many bytes, answered by one
 * byte once all arrived (sink); or "E" then echo everything (echo); or "P" and
 * the reader never reads (stall); or "B" and everything is counted in
 * `bulkReceived`, never answered (bulk). A "source" stream the server opens
 * runs it the other way round, as a response body does: the server writes
 * "S" + u64 size, the agent answers with that many bytes (see `pull`).
 */

import { once } from "node:events";
import fs from "node:fs";
import https from "node:https";
import { Session as InspectorSession } from "node:inspector/promises";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { constants, PerformanceObserver } from "node:perf_hooks";
import type { Duplex } from "node:stream";
import tls from "node:tls";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { WebSocket, WebSocketServer } from "ws";
import {
  formatPathEstimate,
  mirrorPathEstimate,
  PATH_ESTIMATE_HEADER,
  PathMemory,
  parsePathEstimate,
  type Session,
  sessionFromWebSocket,
  type TunnelStream,
  WEBSOCKET_OPTIONS,
} from "../packages/tunnel/src/index.js";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

const role = process.argv[2] as "server" | "agent";
const certDir = process.argv[3]!;
const key = fs.readFileSync(path.join(certDir, "key.pem"));
const cert = fs.readFileSync(path.join(certDir, "cert.pem"));
const SESSION_OPTIONS = { maxStreams: 50_000 };
const CHUNK = Buffer.alloc(64 * 1024, 0x5a);
let bulkReceived = 0;

/** Serves one connection or stream according to its first byte. */
function serve(conn: Duplex): void {
  conn.on("error", () => {});
  let mode: string | undefined;
  let want = -1;
  let got = 0;
  let header = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    if (mode === undefined) {
      mode = String.fromCharCode(chunk[0]!);
      chunk = chunk.subarray(1);
      if (mode === "E") {
        conn.removeListener("data", onData);
        conn.pipe(conn);
        if (chunk.length > 0) conn.write(chunk);
        return;
      }
      if (mode === "P") {
        conn.removeListener("data", onData);
        conn.pause();
        return;
      }
      if (mode === "B") {
        conn.removeListener("data", onData);
        bulkReceived += chunk.length;
        conn.on("data", (d: Buffer) => (bulkReceived += d.length));
        return;
      }
    }
    if (want < 0) {
      header = Buffer.concat([header, chunk]);
      if (header.length < 8) return;
      want = Number(header.readBigUInt64BE(0));
      chunk = header.subarray(8);
    }
    got += chunk.length;
    if (got >= want) conn.write(Buffer.from([1]));
  };
  conn.on("data", onData);
}

const memory = () => {
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
};

// ---------------- server ----------------

const sessions: Session[] = [];
/** As tether-server does: the last session's estimate per cluster. */
const clusterPaths = new PathMemory();
const handlers: Record<string, (args: Record<string, unknown>) => Promise<unknown>> = {};

if (role === "server") {
  const direct = tls.createServer({ key, cert }, serve);
  direct.listen(0, "127.0.0.1");
  const web = https.createServer({ key, cert });
  const wss = new WebSocketServer({ noServer: true, ...WEBSOCKET_OPTIONS });
  web.on("upgrade", (req, socket, head) => {
    wss.handleUpgrade(req, socket, head, (ws) => {
      // As tether-server does: the agent's estimate of this path from its side, else the last
      // session's with this agent (the bench has one cluster).
      const announced = parsePathEstimate(req.headers[PATH_ESTIMATE_HEADER]);
      const carried = announced === undefined ? clusterPaths.recall("bench") : mirrorPathEstimate(announced);
      const session = sessionFromWebSocket(ws, {
        role: "server",
        ...SESSION_OPTIONS,
        ...(carried === undefined ? {} : { pathEstimate: carried }),
      });
      clusterPaths.track("bench", session);
      session.on("stream", serve);
      session.on("error", () => {});
      sessions.push(session);
      session.on("close", () => sessions.splice(sessions.indexOf(session), 1));
    });
  });
  web.listen(0, "127.0.0.1");
  await Promise.all([once(direct, "listening"), once(web, "listening")]);

  handlers.ports = async () => ({
    direct: (direct.address() as AddressInfo).port,
    tunnel: (web.address() as AddressInfo).port,
  });
  handlers.memoryNow = async () => memory();
  /** Bulk bytes received so far, and when (this process's clock, ms). */
  handlers.bulkBytes = async () => ({ bytes: bulkReceived, at: performance.now() });
  /**
   * `count` request/response round trips on a stream the server opens on the
   * newest session: `size` bytes out, the agent echoes them back (a small GET's
   * response takes the agent→server direction a bulk download takes). Returns ms each;
   * stops early after `budgetMs`.
   */
  handlers.serverRoundTrips = async ({ count, size, budgetMs }) => {
    const conn = sessions[sessions.length - 1]!.open("echo");
    conn.write("E");
    const samples = await echoRoundTrips(conn, count as number, size as number, budgetMs as number);
    conn.destroy();
    return samples;
  };
  /**
   * Seconds from opening a "source" stream on the newest session to the last
   * of `size` bytes the agent writes back arriving: a response body on a
   * stream the server opened, which is how production moves them (the SYN
   * grants the session's learned window at once; an agent-opened stream waits
   * a round trip for the ACK's grant). The direct baseline's clock covers the
   * same: one round trip plus the bytes.
   */
  handlers.pull = async ({ size }) => {
    const conn = sessions[sessions.length - 1]!.open("source");
    conn.on("error", () => {});
    const header = Buffer.alloc(9);
    header[0] = "S".charCodeAt(0);
    header.writeBigUInt64BE(BigInt(size as number), 1);
    const started = performance.now();
    let got = 0;
    await new Promise<void>((resolve, reject) => {
      conn.on("data", (d: Buffer) => {
        got += d.length;
        if (got >= (size as number)) resolve();
      });
      conn.once("close", () => reject(new Error(`source closed after ${got} bytes`)));
      conn.write(header);
    });
    const seconds = (performance.now() - started) / 1000;
    conn.destroy();
    return seconds;
  };
  handlers.sessionCount = async () => sessions.length;
  /** Opens `count` idle streams on the first session and reports the heap they cost here. */
  handlers.idleStreams = async ({ count }) => {
    const session = sessions[0]!;
    const before = memory();
    const streams: TunnelStream[] = [];
    let answered = 0;
    await new Promise<void>((resolve) => {
      for (let i = 0; i < (count as number); i++) {
        const s = session.open("idle");
        s.on("error", () => {});
        s.once("data", () => {
          if (++answered === count) resolve();
        });
        s.write("x");
        streams.push(s);
      }
    });
    const after = memory();
    for (const s of streams) s.destroy();
    // Let the resets go out and the peer's table drain before anyone measures again.
    while (session.streamCount > 0) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 200));
    return { before, after };
  };
}

// ---------------- agent ----------------

let agentSession: Session | undefined;
/** As the agent does: the last session's estimate per server URL, carried into the next one. */
const paths = new PathMemory();

/**
 * `zeroMask` opts into an all-zero masking key, which lets ws skip the XOR on
 * every byte the agent sends. RFC 6455 asks clients for unpredictable keys (it
 * protects intermediaries that parse WebSocket traffic); over mutual TLS no
 * intermediary sees the frames, but it is a trade-off, measured here, never a default.
 */
function connectTunnel(port: number, zeroMask = false): Promise<Session> {
  const url = `wss://localhost:${port}/`;
  const carried = paths.recall(url);
  const ws = new WebSocket(url, {
    ...WEBSOCKET_OPTIONS,
    ca: cert,
    ...(carried === undefined ? {} : { headers: { [PATH_ESTIMATE_HEADER]: formatPathEstimate(carried) } }),
    ...(zeroMask ? { generateMask: (mask: Buffer) => void mask.fill(0) } : {}),
  });
  return new Promise((resolve, reject) => {
    ws.once("error", reject);
    ws.once("open", () => {
      const session = sessionFromWebSocket(ws, {
        role: "client",
        ...SESSION_OPTIONS,
        ...(carried === undefined ? {} : { pathEstimate: carried }),
      });
      paths.track(url, session);
      session.on("error", () => {});
      session.on("stream", (s) => {
        if (s.service === "echo") return serve(s);
        if (s.service === "source") return source(s);
        s.on("error", () => {});
        s.once("data", () => s.write("y")); // idle streams: answer once, then sit
      });
      resolve(session);
    });
  });
}

function connectDirect(port: number): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ port, host: "127.0.0.1", servername: "localhost", ca: cert }, () =>
      resolve(socket),
    );
    socket.once("error", reject);
  });
}

async function writeAll(conn: Duplex, size: number): Promise<void> {
  let left = size;
  while (left > 0) {
    const chunk = left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left);
    left -= chunk.length;
    if (!conn.write(chunk)) await once(conn, "drain");
  }
}

/** Answers a "source" stream's "S" + u64 size with that many bytes. */
function source(conn: TunnelStream): void {
  conn.on("error", () => {});
  let header = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    header = Buffer.concat([header, chunk]);
    if (header.length < 9) return;
    conn.removeListener("data", onData);
    void writeAll(conn, Number(header.readBigUInt64BE(1))).catch(() => {});
  };
  conn.on("data", onData);
}

/** Seconds from the first byte written to the sink's acknowledgement. */
async function sink(conn: Duplex, size: number): Promise<number> {
  const header = Buffer.alloc(9);
  header[0] = "S".charCodeAt(0);
  header.writeBigUInt64BE(BigInt(size), 1);
  const ack = once(conn, "data");
  const started = performance.now();
  conn.write(header);
  await writeAll(conn, size);
  await ack;
  return (performance.now() - started) / 1000;
}

if (role === "agent") {
  handlers.connect = async ({ port, zeroMask }) => {
    agentSession?.close();
    agentSession = await connectTunnel(port as number, zeroMask === true);
    return true;
  };
  handlers.throughput = async ({ mode, port, size }) => {
    const conn = mode === "direct" ? await connectDirect(port as number) : agentSession!.open("bench");
    const seconds = await sink(conn, size as number);
    conn.destroy();
    return seconds;
  };
  /** Stream B's transfer time while stream A's reader never reads. */
  handlers.headOfLine = async ({ size }) => {
    const stalled = agentSession!.open("bench");
    stalled.on("error", () => {});
    stalled.write("P");
    // Fill A until it has no credit left; its writes then wait forever.
    for (let i = 0; i < 200; i++) stalled.write(CHUNK);
    await new Promise((r) => setTimeout(r, 200));
    const b = agentSession!.open("bench");
    const seconds = await sink(b, size as number);
    b.destroy();
    const held = stalled.sendWindow;
    stalled.destroy();
    return { seconds, stalledCredit: held };
  };
  handlers.roundTrips = async ({ mode, port, count }) => {
    const conn = mode === "direct" ? await connectDirect(port as number) : agentSession!.open("bench");
    conn.write("E");
    const samples = await echoRoundTrips(conn, count as number, 64);
    conn.destroy();
    return samples;
  };
  /** Starts one stream writing to a bulk sink on the server until bulkStop. */
  let bulk: { stream: TunnelStream; stopped: boolean } | undefined;
  handlers.bulkStart = async () => {
    const stream = agentSession!.open("bench");
    stream.on("error", () => {});
    const state = { stream, stopped: false };
    bulk = state;
    stream.write("B");
    const closed = once(stream, "close").catch(() => {});
    void (async () => {
      while (!state.stopped && !stream.destroyed) {
        if (!stream.write(CHUNK)) await Promise.race([once(stream, "drain").catch(() => {}), closed]);
      }
    })();
    return true;
  };
  handlers.bulkStop = async () => {
    if (bulk !== undefined) {
      bulk.stopped = true;
      bulk.stream.destroy();
      bulk = undefined;
    }
    return true;
  };
  /** Opens `count` more sessions, each its own wss connection, and keeps them idle. */
  const extra: Session[] = [];
  handlers.sessions = async ({ count, port }) => {
    for (let i = 0; i < (count as number); i += 50) {
      const batch = Math.min(50, (count as number) - i);
      extra.push(...(await Promise.all(Array.from({ length: batch }, () => connectTunnel(port as number)))));
    }
    return extra.length;
  };
  handlers.closeSessions = async () => {
    for (const s of extra.splice(0)) s.close();
    return true;
  };
}

/** `count` echoes of `size` bytes on an echo connection; ms each. */
async function echoRoundTrips(
  conn: Duplex,
  count: number,
  size: number,
  budgetMs = Number.POSITIVE_INFINITY,
): Promise<number[]> {
  const message = Buffer.alloc(size, 0x61);
  const samples: number[] = [];
  const deadline = performance.now() + budgetMs;
  for (let i = 0; i < count && performance.now() < deadline; i++) {
    let got = 0;
    const done = new Promise<void>((resolve) => {
      const onData = (d: Buffer) => {
        got += d.length;
        if (got >= message.length) {
          conn.removeListener("data", onData);
          resolve();
        }
      };
      conn.on("data", onData);
    });
    const started = performance.now();
    conn.write(message);
    await done;
    samples.push(performance.now() - started);
  }
  return samples;
}

/** Major and minor GCs so far (a tree's peer without this handler leaves them out of the A/B). */
const gcCount = { major: 0, minor: 0 };
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    const kind = (entry as { detail?: { kind?: number } }).detail?.kind;
    if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) gcCount.major++;
    else if (kind === constants.NODE_PERFORMANCE_GC_MINOR) gcCount.minor++;
  }
}).observe({ entryTypes: ["gc"] });
handlers.gcs = async () => ({ ...gcCount });

/** CPU seconds this process used so far (user + system): a cost measure less swayed by other load than wall time. */
handlers.cpu = async () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
};

/**
 * CPU profiles of one phase (TETHER_BENCH_CPU_PROF=dir, see tunnel.ts): the
 * inspector's sampling profiler, started and stopped around the phase, so the
 * profile holds that phase only (--cpu-prof would cover start-up and every
 * other scenario too). Written as <dir>/<role>-<name>.cpuprofile.
 */
let profiler: InspectorSession | undefined;
/**
 * TETHER_BENCH_HEAP_PROF=1: an allocation sampling profile instead
 * (<role>-<name>.heapprofile, every allocation sampled, collected or not),
 * to find what fills the heap between major GCs.
 */
const heap = process.env.TETHER_BENCH_HEAP_PROF === "1";
handlers.profileStart = async () => {
  profiler ??= new InspectorSession();
  profiler.connect();
  if (heap) {
    await profiler.post("HeapProfiler.enable");
    await profiler.post("HeapProfiler.startSampling", {
      samplingInterval: 16384,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
    return true;
  }
  await profiler.post("Profiler.enable");
  await profiler.post("Profiler.setSamplingInterval", { interval: 100 });
  await profiler.post("Profiler.start");
  return true;
};
handlers.profileStop = async ({ dir, name }) => {
  if (heap) {
    const { profile } = await profiler!.post("HeapProfiler.stopSampling");
    profiler!.disconnect();
    const file = path.join(dir as string, `${role}-${name as string}.heapprofile`);
    fs.writeFileSync(file, JSON.stringify(profile));
    return file;
  }
  const { profile } = await profiler!.post("Profiler.stop");
  profiler!.disconnect();
  const file = path.join(dir as string, `${role}-${name as string}.cpuprofile`);
  fs.writeFileSync(file, JSON.stringify(profile));
  return file;
};

// The parent went away (done, or killed): leave too, so no peer outlives a run.
process.on("disconnect", () => process.exit(0));

process.on("message", async (msg: { id: number; cmd: string } & Record<string, unknown>) => {
  try {
    const handler = handlers[msg.cmd];
    if (handler === undefined) throw new Error(`unknown command ${msg.cmd}`);
    process.send!({ id: msg.id, result: await handler(msg) });
  } catch (err) {
    process.send!({ id: msg.id, error: String((err as Error).stack ?? err) });
  }
});
process.send!({ id: 0, result: "ready" });
