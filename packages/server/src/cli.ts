// tether-server's command line.
import { readFileSync } from "node:fs";
import { Command, InvalidArgumentError, Option } from "commander";
import { createLogger } from "./logger.js";
import { TetherServer } from "./server.js";
import { defaultStateDir, FileStore } from "./state-store.js";

export const VERSION: string = JSON.parse(
  readFileSync(new URL("../package.json", import.meta.url), "utf8"),
).version;

export function buildProgram(): Command {
  return new Command("tether-server")
    .description(
      "The host side of Tether: accepts agents' outbound tunnels and serves each member cluster's Kubernetes API at /clusters/<name>/",
    )
    .version(VERSION, "-v, --version", "print the version")
    .helpOption("-h, --help", "show help")
    .showHelpAfterError("(run tether-server --help for usage)");
}

function seconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError("must be a number of seconds");
  return n;
}

function listenAddress(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new InvalidArgumentError("must be host:port, e.g. 0.0.0.0:8443");
  return { host: m[1] ?? (m[2] || "0.0.0.0"), port };
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  program.action(() => program.help());
  program
    .command("serve")
    .description("run the server: the agent tunnel endpoint and /clusters/<name>/ for host callers")
    .addOption(
      new Option("--state-dir <dir>", "where the CA, clusters and token hashes live").default(
        defaultStateDir(),
      ),
    )
    .addOption(
      new Option("--listen <host:port>", "address to listen on")
        .default("0.0.0.0:8443")
        .argParser(listenAddress),
    )
    .option(
      "--external-url <url>",
      "the URL agents and callers use; its host goes into the serving certificate",
    )
    .addOption(
      new Option("--keepalive <seconds>", "seconds between tunnel pings").default(10).argParser(seconds),
    )
    .addOption(
      new Option("--dead-peer-timeout <seconds>", "seconds of silence before an agent is taken for dead")
        .default(30)
        .argParser(seconds),
    )
    .action(
      async (opts: {
        stateDir: string;
        listen: { host: string; port: number };
        externalUrl?: string;
        keepalive: number;
        deadPeerTimeout: number;
      }) => {
        const log = createLogger();
        const store = await FileStore.open(opts.stateDir);
        const server = await TetherServer.start({
          store,
          host: opts.listen.host,
          port: opts.listen.port,
          log,
          tunnel: { keepAliveInterval: opts.keepalive * 1000, deadPeerTimeout: opts.deadPeerTimeout * 1000 },
          ...(opts.externalUrl ? { externalUrl: opts.externalUrl } : {}),
        });
        const stop = () => {
          log.info("stopping");
          void server.close().then(() => process.exit(0));
        };
        process.once("SIGTERM", stop);
        process.once("SIGINT", stop);
      },
    );
  await program.parseAsync(argv);
}
