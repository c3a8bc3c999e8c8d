/**
 * A TCP proxy that holds every chunk for a fixed delay in each direction,
 * keeping order: `node delay-proxy.ts <delayMs> <listenPort>:<targetPort>...`.
 * Runs as its own process so its timers do not share an event loop with either
 * end. It prints "ready <port>..." once listening (port 0 picks a free one).
 * Each direction buffers at most LIMIT bytes before it stops reading, so TCP
 * backpressure still reaches the sender, as on a real link.
 */

import net from "node:net";

const LIMIT = 32 * 1024 * 1024;
const delay = Number(process.argv[2]);
const routes = process.argv.slice(3).map((r) => r.split(":").map(Number) as [number, number]);

function delayed(from: net.Socket, to: net.Socket): void {
  const queue: Array<{ chunk: Buffer; due: number }> = [];
  let queued = 0;
  let timer: NodeJS.Timeout | undefined;
  let ended = false;
  const flush = () => {
    timer = undefined;
    const now = performance.now();
    while (queue.length > 0 && queue[0]!.due <= now) {
      const { chunk } = queue.shift()!;
      queued -= chunk.length;
      to.write(chunk);
    }
    if (queued < LIMIT / 2 && from.isPaused()) from.resume();
    if (queue.length > 0) timer = setTimeout(flush, Math.max(0, queue[0]!.due - performance.now()));
    else if (ended) to.end();
  };
  from.on("data", (chunk: Buffer) => {
    queue.push({ chunk, due: performance.now() + delay });
    queued += chunk.length;
    if (queued > LIMIT || to.writableLength > LIMIT) from.pause();
    if (timer === undefined) timer = setTimeout(flush, delay);
  });
  to.on("drain", () => {
    if (queued < LIMIT / 2) from.resume();
  });
  from.on("end", () => {
    ended = true;
    if (queue.length === 0) to.end();
  });
}

const ports: number[] = [];
for (const [listen, target] of routes) {
  const server = net.createServer({ noDelay: true }, (client) => {
    const upstream = net.connect({ port: target, host: "127.0.0.1", noDelay: true });
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", close);
    upstream.on("error", close);
    client.on("close", close);
    upstream.on("close", close);
    delayed(client, upstream);
    delayed(upstream, client);
  });
  await new Promise<void>((resolve) => server.listen(listen, "127.0.0.1", resolve));
  ports.push((server.address() as net.AddressInfo).port);
}
console.log(`ready ${ports.join(" ")}`);
