// Real peers the tests and benches run from Debian packages (HAProxy,
// tinyproxy, Chromium, sshd): installed with apt-get when missing and the
// process may (root, as CI runs). tap runs test files in parallel, and two
// apt-get runs at once fail on dpkg's lock, so every install holds one lock
// file through flock(1) and looks again once it has it: the second caller
// finds the package the first one installed.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const LOCK = join(tmpdir(), "tether-apt.lock");

export interface DebianPackage {
  /** The package's name, e.g. "haproxy". */
  name: string;
  /** What shows it is installed: an absolute path, or a command looked up on PATH. */
  provides: string;
  /** Who needs it, for the error: e.g. "the replica tests". */
  neededBy: string;
}

/** Whether `provides` (an absolute path or a command on PATH) is there. */
export function isInstalled(provides: string): boolean {
  if (provides.startsWith("/")) return existsSync(provides);
  try {
    execFileSync("sh", ["-c", 'command -v "$1"', "sh", provides], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** Installs `pkg` when it is missing; throws what to run by hand when this process may not or apt fails. */
export function ensureDebianPackage(pkg: DebianPackage): void {
  if (isInstalled(pkg.provides)) return;
  const manual = `${pkg.neededBy} need ${pkg.provides}: apt-get install -y ${pkg.name}`;
  if (process.getuid?.() !== 0 || !isInstalled("apt-get") || !isInstalled("flock")) throw new Error(manual);
  const check = pkg.provides.startsWith("/") ? `test -e "$2"` : `command -v "$2" >/dev/null`;
  // A fresh machine may have no package lists yet: update only when the first install fails.
  const install = 'apt-get install -y -qq --no-install-recommends "$1"';
  // apt's progress goes to stderr: a test's stdout is its TAP stream, and apt's lines there end the test.
  const script = `{ ${check} || ${install} || { apt-get update -qq && ${install}; }; } 1>&2`;
  try {
    execFileSync("flock", [LOCK, "sh", "-c", script, "sh", pkg.name, pkg.provides], {
      stdio: "inherit",
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    });
  } catch (err) {
    throw new Error(`${manual} (installing it failed: ${(err as Error).message})`);
  }
  if (!isInstalled(pkg.provides))
    throw new Error(`apt-get installed ${pkg.name} but ${pkg.provides} is not there`);
}
