// Builds the harness's real peers — kube-apiserver, kube-controller-manager,
// kube-scheduler, kubectl, the kubelet stand-in, etcd and toxiproxy — from
// pinned Go modules, once, into a cache outside the clone. The cache key hashes
// every Go source, go.mod and go.sum and the build recipe, so changing a pin,
// the stand-in or a flag rebuilds and nothing stale is ever used.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { isAlive } from "./processes.js";

const run = promisify(execFile);
const GO_ROOT = join(dirname(fileURLToPath(import.meta.url)), "go");

export interface Binaries {
  dir: string;
  kubeApiserver: string;
  kubeControllerManager: string;
  kubeScheduler: string;
  kubectl: string;
  kubeletStandin: string;
  etcd: string;
  toxiproxy: string;
  kubernetesVersion: string;
  etcdVersion: string;
}

export class HarnessBuildError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
    this.name = "HarnessBuildError";
  }
}

async function goSources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await goSources(path)));
    else if (/\.go$|^go\.(mod|sum)$/.test(entry.name)) out.push(path);
  }
  return out.sort();
}

// Bump when the build commands change in a way the sources do not show.
const RECIPE = "ldflags-version-stripped-1";

async function sourceHash(): Promise<string> {
  const hash = createHash("sha256").update(RECIPE).update("\0");
  for (const file of await goSources(GO_ROOT)) {
    hash
      .update(relative(GO_ROOT, file))
      .update("\0")
      .update(await readFile(file))
      .update("\0");
  }
  return hash.digest("hex").slice(0, 12);
}

async function pinnedVersion(module: string, dependency: string): Promise<string> {
  const mod = await readFile(join(GO_ROOT, module, "go.mod"), "utf8");
  const m = mod.match(new RegExp(`^\\s*(?:require\\s+)?${dependency.replace(/\./g, "\\.")}\\s+(v\\S+)`, "m"));
  if (!m?.[1]) throw new HarnessBuildError("ERR_HARNESS_PIN", `no pin for ${dependency} in ${module}/go.mod`);
  return m[1];
}

/**
 * What the Go module proxy says of k8s.io/kubernetes at `kubernetesVersion`:
 * the tag's time, and the commit it names when the proxy reports its origin
 * (proxy.golang.org does; a mirror may serve the .info without it).
 */
export async function kubernetesModuleInfo(
  kubernetesVersion: string,
): Promise<{ Time?: string; Origin?: { Hash?: string } }> {
  const moduleDir = join(GO_ROOT, "kube");
  try {
    const { stdout } = await run(
      "go",
      ["mod", "download", "-json", `k8s.io/kubernetes@${kubernetesVersion}`],
      {
        cwd: moduleDir,
      },
    );
    const infoFile = (JSON.parse(stdout) as { Info?: string }).Info;
    return infoFile ? JSON.parse(await readFile(infoFile, "utf8")) : {};
  } catch (err) {
    throw new HarnessBuildError(
      "ERR_HARNESS_BUILD",
      `cannot read the module information of k8s.io/kubernetes@${kubernetesVersion}: ${(err as Error).message}`,
    );
  }
}

/**
 * The -X flags a Kubernetes release build sets (hack/lib/version.sh), from the
 * pinned module: its version, the commit its tag names and the tag's time as
 * the build date, so `kubectl version` and Helm's kubeVersion checks see a
 * real release and the link stays reproducible. -s -w drop symbols and DWARF,
 * which shortens the links of these large binaries.
 */
async function versionLdflags(kubernetesVersion: string): Promise<string> {
  const info = await kubernetesModuleInfo(kubernetesVersion);
  const [major, minor] = kubernetesVersion.replace(/^v/, "").split(".");
  const buildDate = (info.Time ?? "1970-01-01T00:00:00Z").replace(/\.\d+Z$/, "Z");
  const values: Record<string, string> = {
    gitVersion: kubernetesVersion,
    gitMajor: major ?? "",
    gitMinor: minor ?? "",
    gitCommit: info.Origin?.Hash ?? "",
    gitTreeState: "clean",
    buildDate,
  };
  const flags = ["-s", "-w"];
  for (const pkg of ["k8s.io/component-base/version", "k8s.io/client-go/pkg/version"])
    for (const [name, value] of Object.entries(values)) flags.push(`-X ${pkg}.${name}=${value}`);
  return flags.join(" ");
}

export function cacheRoot(): string {
  const base = process.env.XDG_CACHE_HOME || join(homedir(), ".cache");
  return join(base, "tether", "kube");
}

async function findGo(): Promise<string> {
  try {
    const { stdout } = await run("go", ["version"]);
    return stdout.trim();
  } catch {
    throw new HarnessBuildError(
      "ERR_HARNESS_NO_GO",
      "Go was not found on PATH. The Kubernetes test harness builds kube-apiserver, etcd and kubectl " +
        "from Go modules: install Go >= 1.25 and make sure `go version` works, then run again.",
    );
  }
}

async function withLock<T>(lockDir: string, fn: () => Promise<T>): Promise<T> {
  // mkdir is atomic: the first process builds, the others wait for it.
  for (;;) {
    try {
      await mkdir(lockDir);
      await writeFile(join(lockDir, "pid"), String(process.pid));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const owner = Number(await readFile(join(lockDir, "pid"), "utf8").catch(() => "0"));
      const age = Date.now() - (await stat(lockDir).catch(() => ({ mtimeMs: Date.now() }))).mtimeMs;
      const ownerAlive = owner > 0 && isAlive(owner);
      if (!ownerAlive && age > 5_000) await rm(lockDir, { recursive: true, force: true });
      else await new Promise((r) => setTimeout(r, 500));
    }
  }
  try {
    return await fn();
  } finally {
    await rm(lockDir, { recursive: true, force: true });
  }
}

async function goBuild(moduleDir: string, args: string[], log: (line: string) => void): Promise<void> {
  log(`go build ${args.join(" ")}  (in ${relative(process.cwd(), moduleDir) || "."})`);
  try {
    await run("go", ["build", ...args], { cwd: moduleDir, maxBuffer: 64 * 1024 * 1024 });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new HarnessBuildError(
      "ERR_HARNESS_BUILD",
      `go build failed in ${moduleDir}:\n${e.stderr || e.message}`,
    );
  }
}

function layout(dir: string, kubernetesVersion: string, etcdVersion: string): Binaries {
  return {
    dir,
    kubeApiserver: join(dir, "kube-apiserver"),
    kubeControllerManager: join(dir, "kube-controller-manager"),
    kubeScheduler: join(dir, "kube-scheduler"),
    kubectl: join(dir, "kubectl"),
    kubeletStandin: join(dir, "kubelet-standin"),
    etcd: join(dir, "etcd"),
    toxiproxy: join(dir, "toxiproxy-server"),
    kubernetesVersion,
    etcdVersion,
  };
}

/**
 * Returns the harness binaries, building them first when the cache lacks them.
 * `TETHER_KUBE_BIN` may name a directory of prebuilt binaries instead.
 */
export async function ensureBinaries(log: (line: string) => void = () => {}): Promise<Binaries> {
  const kubernetesVersion = await pinnedVersion("kube", "k8s.io/kubernetes");
  const etcdVersion = await pinnedVersion("etcd", "go.etcd.io/etcd/server/v3");
  if (process.env.TETHER_KUBE_BIN) return layout(process.env.TETHER_KUBE_BIN, kubernetesVersion, etcdVersion);

  const dir = join(cacheRoot(), `${kubernetesVersion}-${await sourceHash()}`);
  const bins = layout(dir, kubernetesVersion, etcdVersion);
  if (existsSync(join(dir, ".complete"))) return bins;

  log(`building the Kubernetes harness (${kubernetesVersion}, etcd ${etcdVersion}) into ${dir}`);
  log(await findGo());
  await mkdir(cacheRoot(), { recursive: true });
  return withLock(`${dir}.lock`, async () => {
    if (existsSync(join(dir, ".complete"))) return bins;
    const tmp = `${dir}.tmp-${process.pid}`;
    await rm(tmp, { recursive: true, force: true });
    await mkdir(tmp, { recursive: true });
    const ldflags = await versionLdflags(kubernetesVersion);
    await goBuild(join(GO_ROOT, "kube"), ["-ldflags", ldflags, "-o", `${tmp}/`, "./cmd/..."], log);
    await goBuild(join(GO_ROOT, "etcd"), ["-ldflags=-s -w", "-o", join(tmp, "etcd"), "."], log);
    await goBuild(
      join(GO_ROOT, "toxiproxy"),
      ["-ldflags=-s -w", "-o", join(tmp, "toxiproxy-server"), "github.com/Shopify/toxiproxy/v2/cmd/server"],
      log,
    );
    await writeFile(join(tmp, ".complete"), `${new Date().toISOString()}\n`);
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
    return bins;
  });
}
