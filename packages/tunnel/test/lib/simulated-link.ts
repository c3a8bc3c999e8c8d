/**
 * Two sessions over a simulated link on a virtual clock: each direction has a
 * bottleneck of `rate` bytes per ms with an unbounded queue in front of it
 * (the kernel buffers and proxies of a real path) and `delay` ms of one-way
 * latency after it. `performance.now()` reads the virtual clock while the
 * link is installed, so the sessions' estimators see virtual time; events run
 * in time order and the event loop settles (ticks, immediates) after each.
 */

import { Session, type SessionOptions, type Transport } from "../../src/index.js";

interface Event {
  at: number;
  seq: number;
  run: () => void;
}

export interface Shape {
  /** Bottleneck rate, bytes per ms (1000 = 1 MB/s). */
  rate: number;
  /** One-way delay, ms. */
  delay: number;
}

export interface Direction {
  /** Time the bottleneck finishes what is queued now. */
  busyUntil: number;
  /** Bytes sent into this direction so far. */
  sent: number;
  /** Called with each message as it is sent (before it is queued). */
  onSend?: (message: Buffer) => void;
}

const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

export class SimulatedLink {
  now = 0;
  readonly client: Session;
  readonly server: Session;
  readonly toServer: Direction = { busyUntil: 0, sent: 0 };
  readonly toClient: Direction = { busyUntil: 0, sent: 0 };
  private readonly events: Event[] = [];
  private seq = 0;
  private readonly realNow = performance.now;

  constructor(
    readonly shape: Shape,
    clientOptions: Partial<SessionOptions> = {},
    serverOptions: Partial<SessionOptions> = {},
  ) {
    performance.now = () => this.now;
    const sides: { client?: Session; server?: Session } = {};
    // Keepalive on but never due in virtual time: each session pings once at start, as in production.
    const defaults = { keepAliveInterval: 2 ** 30, deadPeerTimeout: 0 };
    this.client = new Session(
      this.transport(this.toServer, () => sides.server),
      {
        ...defaults,
        ...clientOptions,
        role: "client",
      },
    );
    this.server = new Session(
      this.transport(this.toClient, () => sides.client),
      {
        ...defaults,
        ...serverOptions,
        role: "server",
      },
    );
    sides.client = this.client;
    sides.server = this.server;
  }

  /** Bytes waiting in front of a direction's bottleneck now. */
  queued(direction: Direction): number {
    return Math.max(0, direction.busyUntil - this.now) * this.shape.rate;
  }

  /** Runs `fn` at virtual time `at`. */
  at(at: number, run: () => void): void {
    const event = { at, seq: this.seq++, run };
    let i = this.events.length;
    while (
      i > 0 &&
      (this.events[i - 1]!.at > at || (this.events[i - 1]!.at === at && this.events[i - 1]!.seq > event.seq))
    )
      i--;
    this.events.splice(i, 0, event);
  }

  /** Runs events until virtual time `until`; `check` runs after each. */
  async run(until: number, check?: () => void): Promise<void> {
    for (;;) {
      await settle();
      check?.();
      const next = this.events[0];
      if (next === undefined || next.at > until) break;
      this.events.shift();
      this.now = next.at;
      next.run();
    }
    this.now = until;
  }

  /** Closes both sessions and gives performance.now back. */
  async close(): Promise<void> {
    this.client.close();
    this.server.close();
    await settle();
    performance.now = this.realNow;
  }

  private transport(direction: Direction, peer: () => Session | undefined): Transport {
    return {
      send: (message, done) => {
        direction.onSend?.(message);
        direction.sent += message.length;
        const depart = Math.max(this.now, direction.busyUntil) + message.length / this.shape.rate;
        direction.busyUntil = depart;
        const copy = Buffer.from(message);
        this.at(depart + this.shape.delay, () => peer()?.receive(copy));
        process.nextTick(done);
      },
      close: () => {},
    };
  }
}
