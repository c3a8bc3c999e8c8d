/**
 * Failing fast on a dead session: how long a request opened on a session
 * whose connection went silent (a blackholed NAT or load-balancer mapping:
 * nothing arrives, nothing closes) waits for its error. Both ends use the
 * default SessionOptions (probe after 1 s of silence, dead 3 s after the
 * probe; dead-peer timeout 30 s). The link is a TCP proxy that, once
 * blackholed, swallows every byte and never closes. Plain ws: TLS changes
 * nothing about liveness. The clock runs from the open (or, on a pooled
 * stream, the write) to the stream's 'error'.
 */

import { once } from "node:events";
import { createServer as createHttpServer } from "node:http";
import net, { type AddressInfo } from "node:net";
import { type Session, sessionFromWebSocket, type TunnelStream, WEBSOCKET_OPTIONS } from "@tether/tunnel";
import { WebSocket, WebSocketServer } from "ws";

const TRIALS = 3;

interface Blackhole {
  port: number;
  blackhole(): void;
  close(): void;
}

async function blackholeProxy(target: number): Promise<Blackhole> {
  let dropping = false;
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ noDelay: true }, (client) => {
    const upstream = net.connect(target, "127.0.0.1");
    for (const [from, to] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      sockets.add(from);
      from.on("data", (chunk: Buffer) => {
        if (!dropping) to.write(chunk);
      });
      from.on("end", () => {
        if (!dropping) to.end();
      });
      from.on("error", () => to.destroy());
    }
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    port: (server.address() as AddressInfo).port,
    blackhole: () => {
      dropping = true;
    },
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/** One session, warmed up, then blackholed: ms from the request to its error. */
async function trial(kind: "open" | "pooled"): Promise<number> {
  const http = createHttpServer();
  const wss = new WebSocketServer({ server: http, ...WEBSOCKET_OPTIONS });
  http.listen(0, "127.0.0.1");
  await once(http, "listening");
  const proxy = await blackholeProxy((http.address() as AddressInfo).port);
  const accepted = new Promise<Session>((resolve) =>
    wss.once("connection", (ws) => resolve(sessionFromWebSocket(ws, { role: "server" }))),
  );
  const ws = new WebSocket(`ws://127.0.0.1:${proxy.port}/`, WEBSOCKET_OPTIONS);
  await once(ws, "open");
  const agent = sessionFromWebSocket(ws, { role: "client" });
  agent.on("error", () => {});
  agent.on("stream", (s: TunnelStream) => {
    s.on("error", () => {});
    s.on("data", (chunk: Buffer) => s.write(chunk));
  });
  const server = await accepted;
  server.on("error", () => {});
  try {
    const pooled = server.open("echo");
    pooled.on("error", () => {});
    pooled.write("warm up");
    await once(pooled, "data");
    // The agent's answer to the warm-up now waits on nothing: only the server has a reason to probe.
    await server.ping();
    proxy.blackhole();
    const started = performance.now();
    const stream = kind === "open" ? server.open("echo") : pooled;
    const failed = new Promise((resolve) => stream.once("error", resolve));
    stream.write("GET /api HTTP/1.1\r\n\r\n");
    await failed;
    return performance.now() - started;
  } finally {
    server.close();
    agent.close();
    ws.terminate();
    proxy.close();
    wss.close();
    http.close();
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function deadSession(): Promise<{
  metrics: Record<string, number>;
  rows: Array<[string, string, string]>;
}> {
  const open: number[] = [];
  const pooled: number[] = [];
  for (let i = 0; i < TRIALS; i++) {
    open.push(await trial("open"));
    pooled.push(await trial("pooled"));
  }
  const metrics = {
    dead_session_open_ms: Math.round(median(open)),
    dead_session_pooled_ms: Math.round(median(pooled)),
  };
  const list = (xs: number[]) => xs.map((x) => Math.round(x)).join(", ");
  return {
    metrics,
    rows: [
      [
        "dead_session_open_ms",
        String(metrics.dead_session_open_ms),
        `new stream on a blackholed session to its error, median of ${TRIALS} (${list(open)}) (target <= 5000; dead-peer timeout 30000)`,
      ],
      [
        "dead_session_pooled_ms",
        String(metrics.dead_session_pooled_ms),
        `a request written on an open (pooled) stream, same (${list(pooled)})`,
      ],
    ],
  };
}
