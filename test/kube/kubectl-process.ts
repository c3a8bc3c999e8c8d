// A long-running kubectl (logs -f, get -w, port-forward) whose output a test
// can wait on. Bounded waits keep a broken path from hanging the suite; they
// are liveness limits, not performance assertions.
import { type ChildProcess, spawn } from "node:child_process";

export class KubectlProcess {
  readonly child: ChildProcess;
  private out = "";
  private err = "";
  private waiters = new Set<() => void>();
  readonly exited: Promise<number | null>;

  constructor(kubectl: string, args: string[], env: NodeJS.ProcessEnv = process.env) {
    this.child = spawn(kubectl, args, { stdio: ["pipe", "pipe", "pipe"], env });
    this.child.stdout!.setEncoding("utf8").on("data", (d: string) => this.append("out", d));
    this.child.stderr!.setEncoding("utf8").on("data", (d: string) => this.append("err", d));
    this.exited = new Promise((resolve) => {
      this.child.once("exit", (code) => {
        resolve(code);
        for (const w of this.waiters) w();
      });
    });
  }

  private append(which: "out" | "err", data: string): void {
    if (which === "out") this.out += data;
    else this.err += data;
    for (const w of this.waiters) w();
  }

  get stdout(): string {
    return this.out;
  }

  get stderr(): string {
    return this.err;
  }

  /** Resolves with the first match of `pattern` in stdout (or stderr), rejects on exit or after `limitMs`. */
  waitFor(
    pattern: RegExp,
    limitMs = 30_000,
    stream: "stdout" | "stderr" = "stdout",
  ): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const m = (stream === "stdout" ? this.out : this.err).match(pattern);
        if (m) return done(() => resolve(m));
        if (this.child.exitCode !== null || this.child.signalCode !== null) {
          done(() =>
            reject(new Error(`kubectl exited before ${pattern}: stdout=${this.out} stderr=${this.err}`)),
          );
        }
      };
      const timer = setTimeout(
        () =>
          done(() =>
            reject(new Error(`no ${pattern} within ${limitMs}ms: stdout=${this.out} stderr=${this.err}`)),
          ),
        limitMs,
      );
      const done = (fn: () => void) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        fn();
      };
      this.waiters.add(check);
      check();
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGTERM");
    await this.exited;
  }
}
