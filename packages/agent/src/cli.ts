// tether-agent's command line.
import { readFileSync } from "node:fs";
import { Command, Option } from "commander";
import { pino } from "pino";
import { X509Certificate } from "node:crypto";
import { TetherAgent } from "./agent.js";
import { type Credentials, CredentialsDir, clusterOf } from "./credentials.js";
import { join } from "./join.js";
import { inClusterTarget, type KubeTarget, kubeconfigTarget, SERVICE_ACCOUNT_DIR } from "./kube-target.js";

export const VERSION: string = JSON.parse(
  readFileSync(new URL("../package.json", import.meta.url), "utf8"),
).version;

interface RunOptions {
  server: string;
  cluster?: string;
  token?: string;
  caHash?: string;
  stateDir: string;
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  kubeconfig?: string;
  context?: string;
  serviceAccountDir: string;
  keepalive: number;
  deadPeerTimeout: number;
}

function readFlagFile(path: string, flag: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw new Error(`${flag} ${path}: ${(err as Error).message}`);
  }
}

function seconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new Error(`not a number of seconds: ${value}`);
  return n;
}

async function credentials(
  opts: RunOptions,
  dir: CredentialsDir,
  log: { info(o: object, m: string): void },
): Promise<Credentials> {
  if (opts.caFile || opts.certFile || opts.keyFile) {
    if (!opts.caFile || !opts.certFile || !opts.keyFile) {
      throw new Error("--ca-file, --cert-file and --key-file go together");
    }
    return {
      caPem: readFlagFile(opts.caFile, "--ca-file"),
      certPem: readFlagFile(opts.certFile, "--cert-file"),
      keyPem: readFlagFile(opts.keyFile, "--key-file"),
    };
  }
  const saved = await dir.load();
  if (saved) {
    const cluster = clusterOf(saved.certPem);
    if (opts.cluster && opts.cluster !== cluster) {
      throw new Error(`${dir.path} holds the identity of cluster "${cluster}", not "${opts.cluster}"`);
    }
    const notAfter = new X509Certificate(saved.certPem).validTo;
    if (Date.parse(notAfter) <= Date.now()) {
      throw new Error(
        `the certificate in ${dir.path} expired at ${notAfter}: run "tether-server join-token ${cluster}" on the host, ` +
          `remove ${dir.path} and start the agent again with --token`,
      );
    }
    log.info({ cluster, notAfter }, "using the saved identity");
    return saved;
  }
  if (!opts.cluster || !opts.token || !opts.caHash) {
    throw new Error(
      `not joined yet (no ${dir.path}): pass --cluster, --token and --ca-hash as printed by "tether-server cluster add", ` +
        "or --ca-file, --cert-file and --key-file",
    );
  }
  const joined = await join({
    server: opts.server,
    cluster: opts.cluster,
    token: opts.token,
    caHash: opts.caHash,
  });
  await dir.save(joined);
  log.info({ cluster: opts.cluster, stateDir: opts.stateDir }, "joined");
  return joined;
}

export function buildProgram(): Command {
  return new Command("tether-agent")
    .description(
      "The member side of Tether: dials out to tether-server and forwards its requests to this cluster's Kubernetes API",
    )
    .version(VERSION, "-v, --version", "print the version")
    .helpOption("-h, --help", "show help")
    .showHelpAfterError("(run tether-agent --help for usage)")
    .requiredOption("--server <url>", "tether-server's URL, e.g. https://tether.example.com:8443")
    .option("--cluster <name>", "this cluster's name, as registered with tether-server cluster add")
    .option("--token <token>", "one-time join token (only needed until the agent has joined)")
    .option("--ca-hash <sha256:hex>", "pin of the server's CA, printed by tether-server cluster add")
    .option(
      "--state-dir <dir>",
      "where the agent keeps its key and certificate",
      process.env.TETHER_AGENT_STATE_DIR ?? "./.tether-agent",
    )
    .option("--ca-file <path>", "instead of joining: PEM of the CA that signed the server's certificate")
    .option("--cert-file <path>", "instead of joining: this cluster's client certificate (PEM)")
    .option("--key-file <path>", "instead of joining: its private key (PEM)")
    .option(
      "--kubeconfig <path>",
      "reach the apiserver named by this kubeconfig instead of the in-cluster one",
    )
    .option("--context <name>", "kubeconfig context to use (default: its current context)")
    .option(
      "--service-account-dir <dir>",
      "where the pod's service-account token and ca.crt are mounted (in-cluster mode)",
      SERVICE_ACCOUNT_DIR,
    )
    .addOption(
      new Option("--keepalive <seconds>", "seconds between tunnel pings").default(10).argParser(seconds),
    )
    .addOption(
      new Option("--dead-peer-timeout <seconds>", "seconds of silence before the server is taken for dead")
        .default(30)
        .argParser(seconds),
    );
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  program.action(async (opts: RunOptions) => {
    const log = pino({ name: "tether-agent", level: process.env.TETHER_LOG_LEVEL ?? "info" });
    const credentialsDir = new CredentialsDir(opts.stateDir);
    const { caPem, certPem, keyPem } = await credentials(opts, credentialsDir, log);
    const target: KubeTarget = opts.kubeconfig
      ? kubeconfigTarget(opts.kubeconfig, opts.context)
      : inClusterTarget(process.env, opts.serviceAccountDir);
    const agent = new TetherAgent({
      server: opts.server,
      caPem,
      certPem,
      keyPem,
      target,
      credentialsDir,
      tunnel: { keepAliveInterval: opts.keepalive * 1000, deadPeerTimeout: opts.deadPeerTimeout * 1000 },
      log,
    });
    log.info({ target: target.description, server: opts.server, version: VERSION }, "starting");
    agent.start();
    const stop = () => {
      log.info({}, "stopping");
      void agent.stop().then(() => process.exit(0));
    };
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
  });
  await program.parseAsync(argv);
}
