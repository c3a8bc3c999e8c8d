// Where audit lines go: a file opened for appending with mode 0600, or
// standard output. Writes are asynchronous (sonic-boom, pino's writer) so a
// slow disk never stalls the data path; what is waiting to be written is
// bounded, and a line that would exceed the bound is dropped and counted in a
// log warning rather than held. Lines are handed to the kernel whole — a write
// carries one line or several whole ones, never part of one — so a crash
// cannot leave a torn line. reopen() (on SIGHUP) switches to a fresh file at
// the same path, for logrotate.
import { fchmod, fstat } from "node:fs";
import { codedError } from "@tether/common";
import sonicBoom, { type SonicBoom } from "sonic-boom";
import type { Logger } from "../logger.js";

// A CommonJS module whose types name the class as a named export.
const Boom = sonicBoom as unknown as typeof SonicBoom;

export const ERR_TETHER_AUDIT_LOG = "ERR_TETHER_AUDIT_LOG";

/** Bytes of audit lines that may wait for the disk before new ones are dropped. */
export const DEFAULT_AUDIT_BUFFER_BYTES = 8 * 1024 * 1024;
/**
 * At most this much goes into one write. Whole lines only, so it bounds the
 * batch, not a line (a line is a few KiB at most); large enough that a busy
 * event loop turn's lines leave in one write instead of queueing behind 16 KiB
 * ones (sonic-boom's default). Buffers, not strings: sonic-boom then tracks
 * lengths instead of measuring its last string on every write.
 */
const MAX_WRITE_BYTES = 1024 * 1024;
/** Dropped lines and write errors are reported at most this often. */
const WARNING_INTERVAL_MS = 10_000;

export interface AuditSink {
  /** Queues one whole line (ending in "\n"). Never blocks, never throws. */
  write(line: string): void;
  /** Reopens the file at its path (after logrotate moved it); a no-op on standard output. */
  reopen(): void;
  /** Writes what is queued and closes. */
  close(): Promise<void>;
}

export interface AuditFileOptions {
  /** A file path, or "-" for standard output. */
  target: string;
  log: Logger;
  maxBufferBytes?: number;
  /** How often dropped lines and write errors are reported at most. */
  warningIntervalMs?: number;
}

export class AuditFile implements AuditSink {
  private dropped = 0;
  private dropTimer: NodeJS.Timeout | undefined;
  private lastError = 0;

  private get warningIntervalMs(): number {
    return this.options.warningIntervalMs ?? WARNING_INTERVAL_MS;
  }

  private constructor(
    private readonly boom: SonicBoom,
    private readonly options: AuditFileOptions,
  ) {
    boom.on("drop", () => this.countDrop());
    // Each (re)open: a file someone else created with a wider mode is narrowed to 0600.
    boom.on("ready", () => this.narrowMode());
  }

  /** Opens the audit log; rejects with ERR_TETHER_AUDIT_LOG when the file cannot be opened for appending. */
  static open(options: AuditFileOptions): Promise<AuditFile> {
    const writer = {
      maxLength: options.maxBufferBytes ?? DEFAULT_AUDIT_BUFFER_BYTES,
      maxWrite: MAX_WRITE_BYTES,
      contentMode: "buffer",
      sync: false,
    } as const;
    const boom =
      options.target === "-"
        ? new Boom({ fd: 1, ...writer })
        : new Boom({ dest: options.target, append: true, mode: 0o600, ...writer });
    const file = new AuditFile(boom, options);
    if (options.target === "-") return Promise.resolve(file.warnOnErrors());
    return new Promise((resolve, reject) => {
      const onError = (err: Error) =>
        reject(
          codedError(
            ERR_TETHER_AUDIT_LOG,
            `cannot open the audit log ${options.target} for appending: ${err.message}`,
            err,
          ),
        );
      boom.once("error", onError);
      boom.once("ready", () => {
        boom.off("error", onError);
        resolve(file.warnOnErrors());
      });
    });
  }

  /** From the first open on, a failing write or reopen is a warning (one per interval), not a crash. */
  private warnOnErrors(): this {
    this.boom.on("error", (err: Error) => {
      if (Date.now() - this.lastError < this.warningIntervalMs) return;
      this.lastError = Date.now();
      this.options.log.warn({ err: err.message, auditLog: this.options.target }, "audit log write failed");
    });
    return this;
  }

  write(line: string): void {
    // contentMode "buffer" takes Buffers; its types know only strings.
    this.boom.write(Buffer.from(line) as unknown as string);
  }

  reopen(): void {
    if (this.options.target !== "-") this.boom.reopen();
  }

  close(): Promise<void> {
    if (this.dropTimer) this.reportDrops();
    // end() flushes first; it leaves standard output open.
    return new Promise((resolve) => {
      this.boom.once("close", () => resolve());
      this.boom.end();
    });
  }

  private narrowMode(): void {
    const fd = (this.boom as unknown as { fd: number }).fd;
    fstat(fd, (err, stat) => {
      if (err || !stat.isFile() || (stat.mode & 0o077) === 0) return;
      fchmod(fd, 0o600, (chmodErr) => {
        this.options.log.warn(
          { auditLog: this.options.target, mode: (stat.mode & 0o777).toString(8) },
          chmodErr
            ? `the audit log is readable by others and its mode could not be narrowed: ${chmodErr.message}`
            : "the audit log was readable by others: its mode is now 0600",
        );
      });
    });
  }

  private countDrop(): void {
    this.dropped++;
    this.dropTimer ??= setTimeout(() => this.reportDrops(), this.warningIntervalMs).unref();
  }

  private reportDrops(): void {
    clearTimeout(this.dropTimer);
    this.dropTimer = undefined;
    if (this.dropped === 0) return;
    this.options.log.warn(
      { auditLog: this.options.target, dropped: this.dropped },
      "audit lines dropped: the audit log's destination is slower than the traffic",
    );
    this.dropped = 0;
  }
}
