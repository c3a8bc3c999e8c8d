// Bytes per second through each agent session, measured between two looks
// (status page renders) from the session's running byte counters: no work
// per frame, and nothing kept once a session is gone (a WeakMap keyed by it).
// A look sooner than MIN_INTERVAL_MS after the last measured one repeats that
// measurement, so that two viewers a moment apart do not see noise.

const MIN_INTERVAL_MS = 1_000;

export interface ByteCounters {
  readonly bytesSent: number;
  readonly bytesReceived: number;
}

export interface ByteRate {
  sentPerSecond: number;
  receivedPerSecond: number;
}

interface Sample {
  at: number;
  sent: number;
  received: number;
  rate: ByteRate;
}

export class ByteRates {
  private readonly samples = new WeakMap<ByteCounters, Sample>();

  /** The rate since the previous look; on the first look, the average since `since` (the session's start). */
  rate(session: ByteCounters, since: Date, now = Date.now()): ByteRate {
    const sent = session.bytesSent;
    const received = session.bytesReceived;
    const previous = this.samples.get(session);
    if (previous && now - previous.at < MIN_INTERVAL_MS) return previous.rate;
    const from = previous ?? { at: since.getTime(), sent: 0, received: 0 };
    const seconds = Math.max(now - from.at, MIN_INTERVAL_MS) / 1000;
    const rate = {
      sentPerSecond: Math.max(0, (sent - from.sent) / seconds),
      receivedPerSecond: Math.max(0, (received - from.received) / seconds),
    };
    this.samples.set(session, { at: now, sent, received, rate });
    return rate;
  }
}
