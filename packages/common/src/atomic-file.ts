// Crash-safe file writes for the state directory. A file is written to a
// uniquely named temporary file in the same directory, flushed to disk,
// renamed over the target and the directory entry flushed, so a reader (or a
// process restarted after kill -9 or a power cut) sees either the old content
// or the new one, never a torn mix. Temporary files left behind by a crash are
// named after their writer's pid so they can be recognised and removed.
import { randomBytes } from "node:crypto";
import { open, readdir, rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { codedError } from "./coded-error.js";

/** Error code of a state file that exists but does not hold valid JSON. */
export const ERR_TETHER_STATE_CORRUPT = "ERR_TETHER_STATE_CORRUPT";

// `.<target>.<pid>.<random>.tmp`: dot-prefixed so listings and globs skip it.
const TEMP_RE = /^\.(.+)\.(\d+)\.([0-9a-f]{16})\.tmp$/;

function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(8).toString("hex")}.tmp`);
}

/** Flushes a directory's entries (the rename) to disk; a no-op where directories can't be fsynced. */
async function fsyncDir(dir: string): Promise<void> {
  let fh: Awaited<ReturnType<typeof open>> | undefined;
  try {
    fh = await open(dir, "r");
    await fh.sync();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // Windows can't open directories; some filesystems refuse fsync on them.
    if (code !== "EISDIR" && code !== "EPERM" && code !== "EINVAL" && code !== "EACCES") throw err;
  } finally {
    await fh?.close();
  }
}

/**
 * Atomically replaces `path` with `data`: the new file gets exactly `mode`
 * (not filtered by the umask). On failure the target is untouched and the
 * temporary file removed; the fs error (with its `code`) is rethrown.
 */
export async function writeFileAtomic(path: string, data: string | Buffer, mode = 0o600): Promise<void> {
  const tmp = tempPathFor(path);
  let created = false;
  try {
    const fh = await open(tmp, "wx", mode);
    created = true;
    try {
      await fh.chmod(mode); // open's mode is masked by the umask; the caller asked for this one
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
    created = false;
    await fsyncDir(dirname(path));
  } catch (err) {
    if (created) await unlink(tmp).catch(() => {});
    throw err;
  }
}

/** Parses the text of the state file `path`; shared with callers that read through a file handle. */
export function parseJsonText<T>(path: string, text: string): T {
  try {
    return JSON.parse(text) as T;
  } catch (err) {
    throw codedError(
      ERR_TETHER_STATE_CORRUPT,
      `state file ${path} is not valid JSON (${(err as Error).message}); ` +
        `restore it from a backup or move it away to start that part of the state afresh`,
      err,
    );
  }
}

function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM"; // exists, owned by someone else
  }
}

/**
 * Removes temporary files left in `dir` by writers that no longer run (kill -9
 * between create and rename). Files of live processes, including this one, are
 * kept. Returns how many were removed.
 */
export async function removeStaleTempFiles(dir: string): Promise<number> {
  let removed = 0;
  for (const name of await readdir(dir)) {
    const m = TEMP_RE.exec(name);
    if (!m || processAlive(Number(m[2]))) continue;
    try {
      await unlink(join(dir, name));
      removed++;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  }
  return removed;
}
