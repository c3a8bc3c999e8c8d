// The state directory's lock: mutations are serialised within the process by a
// per-directory promise queue and across processes (server + admin CLI) by an
// exclusive lock file holding its owner's pid, host and a nonce. A lock whose
// owner process is gone (or that stayed unreadable) is broken, under a second
// short-lived lock so that two breakers cannot race.
import { randomBytes } from "node:crypto";
import { link, open, readFile, unlink, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { basename, dirname, join } from "node:path";
import { codedError } from "@tether/common";
import { ERR_TETHER_STATE_LOCKED } from "./state-store.js";

const LOCK_FILE = "state.lock";
const BREAK_LOCK_FILE = "state.lock.break";
/** How long a lock file may be unreadable (being written, or torn by a power cut) before it counts as stale. */
const LOCK_UNREADABLE_GRACE_MS = 5_000;

interface LockInfo {
  pid: number;
  hostname: string;
  nonce: string;
  since: string;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Creates `path` holding `content` only if it does not exist; the content is complete once the file is visible. */
async function createExclusive(path: string, content: string): Promise<boolean> {
  // Write a private temp file, then hard-link it into place: link() fails
  // atomically with EEXIST, and the lock never appears empty. (Named like
  // writeFileAtomic's temp files, so a crash leftover gets cleaned up.)
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(8).toString("hex")}.tmp`);
  await writeFile(tmp, content, { flag: "wx", mode: 0o600 });
  try {
    await link(tmp, path);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EEXIST") return false;
    if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP" && code !== "ENOSYS") throw err;
    // Filesystem without hard links: plain exclusive create.
    try {
      const fh = await open(path, "wx", 0o600);
      try {
        await fh.writeFile(content);
      } finally {
        await fh.close();
      }
      return true;
    } catch (err2) {
      if ((err2 as NodeJS.ErrnoException).code === "EEXIST") return false;
      throw err2;
    }
  } finally {
    await unlink(tmp).catch(() => {});
  }
}

type LockState = { state: "absent" } | { state: "live"; info?: LockInfo } | { state: "stale"; raw: string };

async function inspectLock(path: string): Promise<LockState> {
  let raw: string;
  let mtimeMs: number;
  try {
    const fh = await open(path, "r");
    try {
      mtimeMs = (await fh.stat()).mtimeMs;
      raw = await fh.readFile("utf8");
    } finally {
      await fh.close();
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { state: "absent" };
    throw err;
  }
  let info: LockInfo | undefined;
  try {
    const v = JSON.parse(raw) as LockInfo;
    if (Number.isInteger(v.pid) && v.pid > 0 && typeof v.hostname === "string") info = v;
  } catch {}
  if (!info) {
    return Date.now() - mtimeMs > LOCK_UNREADABLE_GRACE_MS ? { state: "stale", raw } : { state: "live" };
  }
  if (info.hostname !== hostname()) return { state: "live", info }; // can't see other hosts' processes
  // Our own pid: this process serialises its own mutations per directory, so a
  // lock bearing our pid that we are waiting for is from a previous incarnation
  // (typically pid 1 in a restarted container).
  if (info.pid === process.pid || !processAlive(info.pid)) return { state: "stale", raw };
  return { state: "live", info };
}

/** Removes the lock at `path` if it still holds `raw`, under a short-lived break lock so two breakers can't race. */
async function breakStaleLock(dir: string, path: string, raw: string): Promise<void> {
  const breakPath = join(dir, BREAK_LOCK_FILE);
  const me = JSON.stringify({
    pid: process.pid,
    hostname: hostname(),
    nonce: randomBytes(8).toString("hex"),
  });
  if (!(await createExclusive(breakPath, me))) {
    const other = await inspectLock(breakPath);
    if (other.state === "stale") await unlink(breakPath).catch(() => {});
    return; // someone else is breaking it; retry the main lock
  }
  try {
    let current: string | undefined;
    try {
      current = await readFile(path, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    if (current === raw) await unlink(path).catch(() => {});
  } finally {
    await unlink(breakPath).catch(() => {});
  }
}

// One queue per state directory for the whole process (several FileStore
// instances on one directory share it), kept on globalThis so that two copies
// of this module still agree.
const QUEUES_KEY = Symbol.for("tether.state-store.queues");
const globalSlots = globalThis as Record<symbol, unknown>;
if (!(globalSlots[QUEUES_KEY] instanceof Map)) globalSlots[QUEUES_KEY] = new Map<string, Promise<unknown>>();
const queues = globalSlots[QUEUES_KEY] as Map<string, Promise<unknown>>;

function enqueue<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const prev = queues.get(key) ?? Promise.resolve();
  const run = prev.then(fn, fn);
  const tail = run.then(
    () => {},
    () => {},
  );
  queues.set(key, tail);
  void tail.then(() => {
    if (queues.get(key) === tail) queues.delete(key);
  });
  return run;
}

/** Takes the state directory's lock file, waiting for another process at most `timeoutMs`; resolves with its release. */
async function acquireLock(dir: string, timeoutMs: number): Promise<() => Promise<void>> {
  const path = join(dir, LOCK_FILE);
  const info: LockInfo = {
    pid: process.pid,
    hostname: hostname(),
    nonce: randomBytes(12).toString("hex"),
    since: new Date().toISOString(),
  };
  const content = JSON.stringify(info);
  const deadline = Date.now() + timeoutMs;
  let delay = 2;
  for (;;) {
    if (await createExclusive(path, content)) break;
    const state = await inspectLock(path);
    if (state.state === "stale") {
      await breakStaleLock(dir, path, state.raw);
      continue;
    }
    if (state.state === "live" && Date.now() > deadline) {
      const who = state.info ? `process ${state.info.pid} on ${state.info.hostname}` : "another process";
      throw codedError(
        ERR_TETHER_STATE_LOCKED,
        `state directory ${dir} is locked by ${who}; if that process is gone, remove ${path}`,
      );
    }
    await sleep(delay + Math.random() * delay);
    delay = Math.min(delay * 2, 100);
  }
  return async () => {
    // Only remove the lock if it is still ours (it could have been broken as stale).
    try {
      if ((await readFile(path, "utf8")) === content) await unlink(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  };
}

/** Runs `fn` holding the lock of state directory `dir` (queued behind this process's other holders). */
export function withStateLock<T>(dir: string, timeoutMs: number, fn: () => Promise<T>): Promise<T> {
  return enqueue(dir, async () => {
    const release = await acquireLock(dir, timeoutMs);
    try {
      return await fn();
    } finally {
      await release();
    }
  });
}
