// Child processes of the harness. Every child is tracked so that it dies with
// its parent — on a normal exit, an uncaught error or a signal — and a test
// that fails half-way leaves no process behind.
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync } from "node:fs";

// setpriv (util-linux) makes the kernel kill the child when its parent dies,
// even by SIGKILL, where no exit hook of ours can run.
const SETPRIV = "/usr/bin/setpriv";
const withParentDeathSignal = process.platform === "linux" && existsSync(SETPRIV);

const live = new Set<ChildProcess>();
let hooksInstalled = false;

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on("exit", () => {
    for (const child of live) child.kill("SIGKILL");
  });
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(signal, () => {
      for (const child of live) child.kill("SIGKILL");
      process.kill(process.pid, signal);
    });
  }
}

export class ProcessExitedError extends Error {
  readonly code = "ERR_HARNESS_PROCESS_EXITED";
}

export class ManagedProcess {
  readonly name: string;
  readonly logFile: string;
  private readonly child: ChildProcess;
  private exitResult: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  readonly exited: Promise<void>;

  constructor(name: string, bin: string, args: string[], logFile: string, env?: NodeJS.ProcessEnv) {
    installHooks();
    this.name = name;
    this.logFile = logFile;
    const fd = openSync(logFile, "a");
    try {
      const [file, argv] = withParentDeathSignal
        ? [SETPRIV, ["--pdeathsig", "KILL", "--", bin, ...args]]
        : [bin, args];
      this.child = spawn(file, argv, { stdio: ["ignore", fd, fd], env: env ?? process.env });
    } finally {
      closeSync(fd);
    }
    live.add(this.child);
    this.exited = new Promise((resolve) => {
      this.child.once("exit", (code, signal) => {
        this.exitResult = { code, signal };
        live.delete(this.child);
        resolve();
      });
      this.child.once("error", (err) => {
        this.exitResult = { code: null, signal: null };
        live.delete(this.child);
        void err;
        resolve();
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.exitResult === undefined;
  }

  /** The exit code, once exited (null when a signal ended it). */
  get exitCode(): number | null | undefined {
    return this.exitResult?.code;
  }

  /** The last lines of the process's log, for error messages. */
  logTail(lines = 25): string {
    try {
      return readFileSync(this.logFile, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
    } catch {
      return "(no log)";
    }
  }

  /** Throws with the log tail if the process has already exited. */
  assertRunning(): void {
    if (this.exitResult) {
      const { code, signal } = this.exitResult;
      throw new ProcessExitedError(
        `${this.name} exited (code ${code}, signal ${signal}); last lines of ${this.logFile}:\n${this.logTail()}`,
      );
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  async stop(graceMs = 5_000): Promise<void> {
    if (!this.running) return;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

/** Whether a process with this pid exists. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
