// A request body that can be sent again. A tunnel stream the agent never
// accepted (it crossed the agent's go-away, or its session was going away
// when it was opened) was provably not processed, so the request may go on
// another session of the cluster — if the body it carried can be given again.
// What was read of it is held, up to a bound, until the member answers; a
// body that outgrew the bound can only be sent once.
import type { Readable, Writable } from "node:stream";
import { arrivedWhole } from "@tether/common";
import { ErrorCode, isTetherError, ResetCode } from "@tether/tunnel";

/** Bytes of a body held for a resend: a kubectl apply's manifest fits, an upload does not. */
export const REPLAY_LIMIT = 64 << 10;

/** True when `err` says the agent never took the stream: nothing of the request reached the member. */
export function neverAccepted(err: unknown): boolean {
  return (
    isTetherError(err, ErrorCode.GOING_AWAY) ||
    (isTetherError(err, ErrorCode.STREAM_RESET) && err.resetCode === ResetCode.GOING_AWAY)
  );
}

export class ReplayableBody {
  private held: Buffer[] = [];
  private heldBytes = 0;
  private spilled = false;
  private ended = false;
  private dest: Writable | undefined;

  constructor(
    private readonly body: Readable,
    private readonly limit = REPLAY_LIMIT,
  ) {}

  /** Sends the body to `dest`: what was read of it before, then the rest as it comes. */
  pipeTo(dest: Writable): void {
    const first = this.dest === undefined;
    this.dest = dest;
    // A body read to its end by someone else before (a GET whose first attempt went the hop) ends no more.
    if (first && this.body.readableEnded) this.ended = true;
    // A body the parser has seen to its end with nothing left unread (a GET's) ends now, not a few
    // ticks later on 'end': the request's end then leaves with its head, in one tunnel message.
    if (first && !this.ended && arrivedWhole(this.body)) {
      this.ended = true;
      this.body.resume();
    }
    for (const chunk of this.held) dest.write(chunk);
    if (this.ended) {
      dest.end();
      return;
    }
    if (first) {
      this.body.on("data", (chunk: Buffer) => this.onData(chunk));
      this.body.once("end", () => {
        this.ended = true;
        this.dest?.end();
      });
      this.body.on("error", () => this.dest?.destroy());
    }
    this.body.resume();
  }

  /** Whether all of the body read so far can be sent again. */
  get replayable(): boolean {
    return !this.spilled;
  }

  /** Whether the body is read to its end and was empty (a GET's): the request can go anywhere as it was. */
  get empty(): boolean {
    return this.ended && this.heldBytes === 0 && !this.spilled;
  }

  /** The member answered: the body will not be sent again, nothing need be held. */
  release(): void {
    this.held = [];
    this.spilled = true;
  }

  private onData(chunk: Buffer): void {
    if (!this.spilled) {
      if (this.heldBytes + chunk.length <= this.limit) {
        this.held.push(chunk);
        this.heldBytes += chunk.length;
      } else this.release();
    }
    const dest = this.dest!;
    // A failed stream takes no more: the body waits, held, for the next one.
    if (dest.destroyed || !dest.write(chunk)) {
      this.body.pause();
      if (!dest.destroyed) dest.once("drain", () => this.dest === dest && this.body.resume());
    }
  }
}
