// tether-agent's command line.
import { readFileSync } from "node:fs";
import { Command, Option } from "commander";
import { pino } from "pino";
import { TetherAgent } from "./agent.js";
import { inClusterTarget, type KubeTarget, kubeconfigTarget, SERVICE_ACCOUNT_DIR } from "./kube-target.js";

export const VERSION: string = JSON.parse(
  readFileSync(new URL("../package.json", import.meta.url), "utf8"),
).version;

interface RunOptions {
  server: string;
  caFile: string;
  certFile: string;
  keyFile: string;
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

export function buildProgram(): Command {
  return new Command("tether-agent")
    .description(
      "The member side of Tether: dials out to tether-server and forwards its requests to this cluster's Kubernetes API",
    )
    .version(VERSION, "-v, --version", "print the version")
    .helpOption("-h, --help", "show help")
    .showHelpAfterError("(run tether-agent --help for usage)")
    .requiredOption("--server <url>", "tether-server's URL, e.g. https://tether.example.com:8443")
    .requiredOption("--ca-file <path>", "PEM of the CA that signed the server's certificate")
    .requiredOption("--cert-file <path>", "this cluster's client certificate (PEM)")
    .requiredOption("--key-file <path>", "its private key (PEM)")
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
    const caPem = readFlagFile(opts.caFile, "--ca-file");
    const certPem = readFlagFile(opts.certFile, "--cert-file");
    const keyPem = readFlagFile(opts.keyFile, "--key-file");
    const target: KubeTarget = opts.kubeconfig
      ? kubeconfigTarget(opts.kubeconfig, opts.context)
      : inClusterTarget(process.env, opts.serviceAccountDir);
    const agent = new TetherAgent({
      server: opts.server,
      caPem,
      certPem,
      keyPem,
      target,
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
