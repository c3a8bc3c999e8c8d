/**
 * Two sessions over an in-memory link that records every frame and can be
 * made to misbehave per direction: delay messages (a long path), hold them
 * back and release them later (a peer that is slow to answer), or drop them
 * all (a blackholed NAT mapping: nothing arrives, nothing closes).
 */

import { FrameType } from "../../src/frame.js";
import { Session, type SessionOptions, type Transport } from "../../src/index.js";

export interface SentFrame {
  type: number;
  flags: number;
  streamId: number;
  length: number;
}

export interface Direction {
  /** Every frame sent this way, in order, dropped or not. */
  frames: SentFrame[];
  /** One-way delay in ms. */
  delayMs: number;
  /** Drop everything (the session is not told). */
  drop: boolean;
  /** Keep messages back until release(). */
  hold: boolean;
  release(): void;
}

export interface LossyLink {
  client: Session;
  server: Session;
  toServer: Direction;
  toClient: Direction;
  /** Blackholes both directions. */
  blackhole(): void;
}

function split(message: Buffer, into: SentFrame[]): void {
  let o = 0;
  while (o + 12 <= message.length) {
    const type = message[o + 1]!;
    const length = message.readUInt32BE(o + 8);
    into.push({ type, flags: message.readUInt16BE(o + 2), streamId: message.readUInt32BE(o + 4), length });
    o += 12 + (type === FrameType.DATA ? length : 0);
  }
}

function direction(): Direction & { to?: Session; held: Buffer[] } {
  const d: Direction & { to?: Session; held: Buffer[] } = {
    frames: [],
    delayMs: 0,
    drop: false,
    hold: false,
    held: [],
    release() {
      d.hold = false;
      const held = d.held;
      d.held = [];
      for (const m of held) d.to?.receive(m);
    },
  };
  return d;
}

function transport(d: ReturnType<typeof direction>): Transport {
  let closed = false;
  return {
    send(message, done) {
      split(message, d.frames);
      const copy = Buffer.from(message);
      process.nextTick(done);
      if (closed || d.drop) return;
      const deliver = () => {
        if (d.drop) return;
        if (d.hold) d.held.push(copy);
        else d.to?.receive(copy);
      };
      if (d.delayMs > 0) setTimeout(deliver, d.delayMs);
      else setImmediate(deliver);
    },
    close() {
      closed = true;
    },
  };
}

export function lossyLink(
  clientOptions: Partial<SessionOptions> = {},
  serverOptions: Partial<SessionOptions> = {},
): LossyLink {
  const toServer = direction();
  const toClient = direction();
  const defaults = { keepAliveInterval: 0, deadPeerTimeout: 0 };
  const client = new Session(transport(toServer), { ...defaults, ...clientOptions, role: "client" });
  const server = new Session(transport(toClient), { ...defaults, ...serverOptions, role: "server" });
  toServer.to = server;
  toClient.to = client;
  return {
    client,
    server,
    toServer,
    toClient,
    blackhole() {
      toServer.drop = true;
      toClient.drop = true;
    },
  };
}
