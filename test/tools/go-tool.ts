// Small Go programs the tests run (test/tools/<name>: a main package with its
// own go.mod and go.sum), built once into ~/.cache/tether/tools. The cache key
// hashes the module's go.mod, go.sum and Go sources and the Go version, so a
// changed pin rebuilds. Apart from test/kube/go on purpose: that directory's
// hash keys the harness binaries, which take minutes to rebuild.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rename, rm } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);
const TOOLS = dirname(fileURLToPath(import.meta.url));

function cacheDir(): string {
  return join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "tether", "tools");
}

async function keyOf(moduleDir: string): Promise<string> {
  const hash = createHash("sha256");
  const { stdout: goVersion } = await run("go", ["version"]);
  hash.update(goVersion).update("\0");
  const files = (await readdir(moduleDir)).filter((f) => /\.go$|^go\.(mod|sum)$/.test(f)).sort();
  for (const file of files) {
    hash
      .update(file)
      .update("\0")
      .update(await readFile(join(moduleDir, file)))
      .update("\0");
  }
  return hash.digest("hex").slice(0, 12);
}

/** The path of test/tools/<name> built, building it first when the cache lacks it. */
export async function ensureGoTool(name: string): Promise<string> {
  const moduleDir = join(TOOLS, name);
  const binary = join(cacheDir(), `${name}-${await keyOf(moduleDir)}`);
  if (existsSync(binary)) return binary;
  await mkdir(cacheDir(), { recursive: true });
  const tmp = `${binary}.tmp-${process.pid}`;
  try {
    await run("go", ["build", "-trimpath", "-ldflags=-s -w", "-o", tmp, "."], {
      cwd: moduleDir,
      maxBuffer: 16 * 1024 * 1024,
    });
  } catch (err) {
    await rm(tmp, { force: true });
    const e = err as { stderr?: string; message: string };
    throw new Error(`go build of test/tools/${name} failed:\n${e.stderr || e.message}`);
  }
  // A rename is atomic: a test building the same tool at once finds one whole binary either way.
  await rename(tmp, binary);
  return binary;
}

/**
 * Runs the exposition `text` through test/tools/promlint (expfmt's strict
 * parser and promlint, the checks of `promtool check metrics`).
 */
export async function lintExposition(text: string): Promise<{ ok: boolean; output: string }> {
  const binary = await ensureGoTool("promlint");
  return new Promise((resolve) => {
    const child = execFile(binary, [], { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ ok: err === null, output: `${stdout}${stderr}`.trim() });
    });
    child.stdin?.end(text);
  });
}
