/**
 * Two sessions joined by an in-memory link: messages arrive in order, one
 * macrotask later, and a sender's callback fires on delivery, as a socket's
 * would once the bytes left. Fast and deterministic enough for property tests.
 */

import { Session, type SessionOptions, type Transport } from "../../src/index.js";

export interface Link {
  client: Session;
  server: Session;
  /** Bytes sent so far in each direction (frames, headers included). */
  sent: { toServer: number; toClient: number };
  /** Stops delivery in one direction (a dead peer); messages are dropped. */
  cut(): void;
}

type Side = { session?: Session; closed: boolean };

function transport(from: Side, to: Side, count: (n: number) => void, isCut: () => boolean): Transport {
  let queue: Array<{ message: Buffer; done: (err?: Error | null) => void }> = [];
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    const batch = queue;
    queue = [];
    for (const { message, done } of batch) {
      if (!isCut() && !to.closed) to.session?.receive(message);
      done();
    }
  };
  return {
    send(message, done) {
      if (from.closed) {
        process.nextTick(done, new Error("link closed"));
        return;
      }
      count(message.length);
      // Copied as a socket would: the sender reuses the buffer once `done` runs.
      queue.push({ message: Buffer.from(message), done });
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    },
    close() {
      if (from.closed) return;
      from.closed = true;
      // Let what is queued arrive first, like a graceful WebSocket close.
      setImmediate(() => {
        flush();
        to.closed = true;
        if (!isCut()) to.session?.transportClosed();
      });
    },
  };
}

export function pair(
  clientOptions: Partial<SessionOptions> = {},
  serverOptions: Partial<SessionOptions> = {},
): Link {
  const c: Side = { closed: false };
  const s: Side = { closed: false };
  let cut = false;
  const sent = { toServer: 0, toClient: 0 };
  const defaults = { keepAliveInterval: 0, deadPeerTimeout: 0 };
  const client = new Session(
    transport(
      c,
      s,
      (n) => (sent.toServer += n),
      () => cut,
    ),
    { ...defaults, ...clientOptions, role: "client" },
  );
  const server = new Session(
    transport(
      s,
      c,
      (n) => (sent.toClient += n),
      () => cut,
    ),
    { ...defaults, ...serverOptions, role: "server" },
  );
  c.session = client;
  s.session = server;
  return { client, server, sent, cut: () => (cut = true) };
}

/** Reads to the end without destroying the stream (for-await would, taking the write side with it). */
export function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.once("end", () => resolve(Buffer.concat(chunks)));
    stream.once("error", reject);
  });
}
