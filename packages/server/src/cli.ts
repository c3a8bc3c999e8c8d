// tether-server's command line: parsing only; the admin commands live in
// admin-commands.ts. Every failure, commander's own usage errors included,
// becomes one coded Error with a one-line message (main.ts prints it as
// "tether-server: CODE: message" and exits 1); --help and --version succeed.
import { formatError } from "@tether/common";
import { Command, type CommanderError, InvalidArgumentError, Option } from "commander";
import {
  type AdminContext,
  adminCredentialRotate,
  clusterAdd,
  clusterList,
  clusterRemove,
  joinToken,
  kubeconfig,
} from "./admin-commands.js";
import { maintainAdminCredential } from "./admin-credential.js";
import {
  DEFAULT_JOIN_TOKEN_TTL,
  DEFAULT_KUBEFED_TOKEN_TTL,
  DEFAULT_USER_TOKEN_TTL,
  parseDuration,
  serveUrl,
  TetherCliError,
} from "./admin-input.js";
import { AGENT_NAMESPACE, agentManifest } from "./agent-manifest.js";
import { KubeStore } from "./kube-store.js";
import { DEFAULT_KUBEFED_USER, KUBEFED_NAMESPACE, kubefed } from "./kubefed.js";
import { addLimitOptions, limitsFromOptions } from "./limit-options.js";
import { createLogger } from "./logger.js";
import type { OutputFormat } from "./output-format.js";
import {
  addAdminOptions,
  addStoreOptions,
  adminFor,
  closeOpenedStores,
  openStore,
  type StoreOptions,
} from "./store-options.js";
import { VERSION } from "./version.js";

export { VERSION };

/** Where the CLI writes: process.stdout/stderr, or a capture in tests. */
export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
}

const processIo: CliIo = {
  stdout: (text) => void process.stdout.write(text),
  stderr: (text) => void process.stderr.write(text),
};

function seconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError("must be a number of seconds");
  return n;
}

function positiveDuration(value: string): number {
  try {
    const ms = parseDuration(value);
    if (ms > 0) return ms;
  } catch {}
  throw new InvalidArgumentError("must be a duration longer than 0, e.g. 30s, 2m");
}

function listenAddress(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new InvalidArgumentError("must be host:port, e.g. 0.0.0.0:8443");
  return { host: m[1] ?? (m[2] || "0.0.0.0"), port };
}

const collect = (value: string, previous: string[]) => [...previous, value];

const serverOption = () =>
  new Option(
    "--server <url>",
    "tether-server's URL as agents and callers reach it (default: the URL `serve` recorded in <state-dir>/server.json; " +
      "with --credential, the URL in the credential)",
  );

function adminContext(opts: StoreOptions, out: (text: string) => void): AdminContext {
  return { out, admin: (serverFlag) => adminFor(opts, serverFlag) };
}

/** A usage error from commander, with the command it happened in. */
class UsageError extends Error {
  readonly code: string;
  constructor(
    readonly commanderError: CommanderError,
    commandPath: string,
  ) {
    const message =
      commanderError.code === "commander.help"
        ? `missing command; see "${commandPath} --help"`
        : `${commanderError.message.replace(/^error: /, "").trim()} (see "${commandPath} --help")`;
    super(message.replace(/\s*\n\s*/g, " "));
    this.code = commanderError.code;
  }
}

function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(" ");
}

/** tether-server's whole command tree, writing to `io`. */
export function buildProgram(io: CliIo = processIo): Command {
  const program = new Command("tether-server")
    .description(
      "The host side of Tether: accepts agents' outbound tunnels and serves each member cluster's Kubernetes API at /clusters/<name>/",
    )
    .version(VERSION, "-v, --version", "print the version")
    .helpOption("-h, --help", "show help")
    .helpCommand("help [command]", "show help for a command")
    .configureOutput({
      writeOut: (text) => io.stdout(text),
      writeErr: (text) => io.stderr(text),
      // Errors are thrown as UsageError and printed once, by the caller.
      outputError: () => {},
    });
  program.action(() => program.help());
  addServe(program);
  const out = (text: string) => io.stdout(text);
  addClusterCommands(program, out);
  addJoinToken(program, out);
  addKubeconfig(program, out);
  addAgentManifest(program, io);
  addKubefed(program, out);
  addRotateAdminCredential(program, out);
  const override = (cmd: Command) => {
    cmd.exitOverride((err) => {
      throw new UsageError(err, commandPath(cmd));
    });
    cmd.commands.forEach(override);
  };
  override(program);
  return program;
}

function addServe(program: Command): void {
  addLimitOptions(addStoreOptions(program.command("serve")))
    .description("run the server: the agent tunnel endpoint and /clusters/<name>/ for host callers")
    .addOption(
      new Option("--listen <host:port>", "address to listen on")
        .default("0.0.0.0:8443")
        .argParser(listenAddress),
    )
    .addOption(
      new Option(
        "--external-url <url>",
        "the URL agents and callers use; its host goes into the serving certificate",
      ).env("TETHER_EXTERNAL_URL"),
    )
    .addOption(
      new Option("--keepalive <seconds>", "seconds between tunnel pings").default(10).argParser(seconds),
    )
    .addOption(
      new Option("--dead-peer-timeout <seconds>", "seconds of silence before an agent is taken for dead")
        .default(30)
        .argParser(seconds),
    )
    .addOption(
      new Option(
        "--drain-timeout <duration>",
        "how long a replaced agent session (the agent reconnected) may drain before it is closed",
      )
        .default(30_000, "30s")
        .argParser(positiveDuration),
    )
    .action(
      async (
        opts: StoreOptions & {
          listen: { host: string; port: number };
          externalUrl?: string;
          keepalive: number;
          deadPeerTimeout: number;
          drainTimeout: number;
        },
      ) => {
        // Loaded here so that the admin commands start without the proxy and tunnel code.
        const { TetherServer } = await import("./server.js");
        const log = createLogger();
        const store = await openStore(opts, log);
        const server = await TetherServer.start({
          store,
          host: opts.listen.host,
          port: opts.listen.port,
          log,
          tunnel: { keepAliveInterval: opts.keepalive * 1000, deadPeerTimeout: opts.deadPeerTimeout * 1000 },
          drainTimeoutMs: opts.drainTimeout,
          limits: limitsFromOptions(opts),
          ...(opts.externalUrl ? { externalUrl: opts.externalUrl } : {}),
          ...(store instanceof KubeStore ? { clusterStatus: store } : {}),
        });
        // For the admin commands' printed agent commands and kubeconfigs.
        const url = serveUrl(opts.listen.host, server.port, opts.externalUrl);
        await store
          .recordServerUrl(url)
          .catch((err: Error) =>
            log.warn({ err: err.message }, "could not record the server URL in the state directory"),
          );
        await maintainAdminCredential(store, url, server.ca.certPem, log);
        const stop = () => {
          log.info("stopping");
          void server.close().then(() => process.exit(0));
        };
        process.once("SIGTERM", stop);
        process.once("SIGINT", stop);
        process.on("SIGHUP", () => {
          server
            .reloadServingCertificate()
            .catch((err: Error) => log.error({ err: err.message }, "serving certificate reload failed"));
        });
      },
    );
}

function addClusterCommands(program: Command, out: (text: string) => void): void {
  const cluster = program
    .command("cluster")
    .description("register, list and remove member clusters")
    .helpOption("-h, --help", "show help");
  addAdminOptions(cluster.command("add"))
    .description("register a member cluster and print a one-time join token and the tether-agent command")
    .argument("<name>", "the cluster's name: a DNS-1123 label, as in https://<server>/clusters/<name>/")
    .addOption(new Option("--label <key=value>", "a label (repeatable)").default([]).argParser(collect))
    .addOption(
      new Option("--auth <mode>", "how callers reach the member's API server")
        .choices(["impersonate", "passthrough"])
        .default("impersonate"),
    )
    .addOption(
      new Option("--allow-user <user>", "a user allowed to use this cluster (repeatable)")
        .default([])
        .argParser(collect),
    )
    .addOption(
      new Option("--allow-group <group>", "a group allowed to use this cluster (repeatable)")
        .default([])
        .argParser(collect),
    )
    .addOption(
      new Option(
        "--token-ttl <duration>",
        "how long the join token is valid: 90s, 15m, 24h, 7d (at most 30d)",
      ).default(DEFAULT_JOIN_TOKEN_TTL),
    )
    .addOption(serverOption())
    .addOption(new Option("-o, --output <format>", "print as json or yaml").choices(["json", "yaml"]))
    .action(
      async (
        name: string,
        o: StoreOptions & {
          label: string[];
          auth: string;
          allowUser: string[];
          allowGroup: string[];
          tokenTtl: string;
          server?: string;
          output?: "json" | "yaml";
        },
      ) => {
        await clusterAdd(adminContext(o, out), name, {
          labels: o.label,
          auth: o.auth,
          allowUsers: o.allowUser,
          allowGroups: o.allowGroup,
          tokenTtl: o.tokenTtl,
          server: o.server,
          output: o.output,
        });
      },
    );
  addAdminOptions(cluster.command("list"))
    .alias("ls")
    .description("list the registered clusters")
    .addOption(
      new Option("-o, --output <format>", "table, json or yaml")
        .choices(["table", "json", "yaml"])
        .default("table"),
    )
    .addOption(serverOption())
    .action(async (o: StoreOptions & { output: OutputFormat; server?: string }) => {
      await clusterList(adminContext(o, out), {
        output: o.output,
        ...(o.server ? { server: o.server } : {}),
      });
    });
  addAdminOptions(cluster.command("remove"))
    .alias("rm")
    .description("remove a cluster: revoke its agent certificates, delete its tokens and its record")
    .argument("<name>", "the cluster's name")
    .addOption(serverOption())
    .action(async (name: string, o: StoreOptions & { server?: string }) => {
      await clusterRemove(adminContext(o, out), name, o.server ? { server: o.server } : {});
    });
}

function addJoinToken(program: Command, out: (text: string) => void): void {
  addAdminOptions(program.command("join-token"))
    .description("print a new one-time join token (and the tether-agent command) for a registered cluster")
    .argument("<name>", "the cluster's name")
    .addOption(
      new Option(
        "--token-ttl <duration>",
        "how long the token is valid: 90s, 15m, 24h, 7d (at most 30d)",
      ).default(DEFAULT_JOIN_TOKEN_TTL),
    )
    .addOption(serverOption())
    .addOption(new Option("-o, --output <format>", "print as json or yaml").choices(["json", "yaml"]))
    .action(
      async (
        name: string,
        o: StoreOptions & { tokenTtl: string; server?: string; output?: "json" | "yaml" },
      ) => {
        await joinToken(adminContext(o, out), name, {
          tokenTtl: o.tokenTtl,
          server: o.server,
          output: o.output,
        });
      },
    );
}

function addAgentManifest(program: Command, io: CliIo): void {
  addAdminOptions(program.command("agent-manifest"))
    .description(
      "print the YAML that runs tether-agent in a member cluster (namespace, RBAC, a Secret with a new join token, " +
        "Deployment), registering the cluster first if needed: tether-server agent-manifest NAME | kubectl --context NAME apply -f -",
    )
    .argument("<name>", "the cluster's name")
    .addOption(new Option("--image <ref>", "the agent's container image (default: this version's image)"))
    .addOption(
      new Option("--agent-namespace <ns>", "the member cluster's namespace for the agent").default(
        AGENT_NAMESPACE,
      ),
    )
    .addOption(
      new Option(
        "--token-ttl <duration>",
        "how long the join token is valid: 90s, 15m, 24h, 7d (at most 30d)",
      ).default(DEFAULT_JOIN_TOKEN_TTL),
    )
    .addOption(serverOption())
    .action(
      async (
        name: string,
        o: StoreOptions & { image?: string; agentNamespace: string; tokenTtl: string; server?: string },
      ) => {
        await agentManifest({ ...adminContext(o, io.stdout), note: io.stderr }, name, {
          namespace: o.agentNamespace,
          tokenTtl: o.tokenTtl,
          ...(o.image ? { image: o.image } : {}),
          ...(o.server ? { server: o.server } : {}),
        });
      },
    );
}

function addKubefed(program: Command, out: (text: string) => void): void {
  addAdminOptions(program.command("kubefed"))
    .description(
      "print a KubeFedCluster and its token Secret that reach the cluster through Tether: " +
        "tether-server kubefed NAME | kubectl --context HOST apply -f -",
    )
    .argument("<name>", "the cluster's name")
    .addOption(
      new Option("--user <user>", "the user KubeFed acts as (tether:<user> on the member)").default(
        DEFAULT_KUBEFED_USER,
      ),
    )
    .addOption(
      new Option("--group <group>", "a group of that user (repeatable)").default([]).argParser(collect),
    )
    .addOption(
      new Option(
        "--ttl <duration>",
        "how long the token is valid (at most 365d); re-run and re-apply before it ends",
      ).default(DEFAULT_KUBEFED_TOKEN_TTL),
    )
    .addOption(
      new Option("--kubefed-namespace <ns>", "KubeFed's namespace in the host cluster").default(
        KUBEFED_NAMESPACE,
      ),
    )
    .addOption(serverOption())
    .addOption(new Option("-o, --output <format>", "yaml or json").choices(["yaml", "json"]).default("yaml"))
    .action(
      async (
        name: string,
        o: StoreOptions & {
          user: string;
          group: string[];
          ttl: string;
          kubefedNamespace: string;
          server?: string;
          output: "yaml" | "json";
        },
      ) => {
        await kubefed(adminContext(o, out), name, {
          user: o.user,
          groups: o.group,
          ttl: o.ttl,
          namespace: o.kubefedNamespace,
          output: o.output,
          ...(o.server ? { server: o.server } : {}),
        });
      },
    );
}

function addKubeconfig(program: Command, out: (text: string) => void): void {
  addAdminOptions(program.command("kubeconfig"))
    .description("issue a user token for one cluster and print a kubeconfig that uses it")
    .argument("<name>", "the cluster's name")
    .requiredOption("--user <user>", "the user the token authenticates as")
    .addOption(
      new Option("--group <group>", "a group of the user (repeatable)").default([]).argParser(collect),
    )
    .addOption(
      new Option("--ttl <duration>", "how long the token is valid: 90s, 15m, 24h, 7d (at most 365d)").default(
        DEFAULT_USER_TOKEN_TTL,
      ),
    )
    .addOption(serverOption())
    .addOption(new Option("-o, --output <format>", "yaml or json").choices(["yaml", "json"]).default("yaml"))
    .action(
      async (
        name: string,
        o: StoreOptions & {
          user: string;
          group: string[];
          ttl: string;
          server?: string;
          output: "yaml" | "json";
        },
      ) => {
        await kubeconfig(adminContext(o, out), name, {
          user: o.user,
          groups: o.group,
          ttl: o.ttl,
          server: o.server,
          output: o.output,
        });
      },
    );
}

function addRotateAdminCredential(program: Command, out: (text: string) => void): void {
  addStoreOptions(program.command("rotate-admin-credential"))
    .description(
      "replace the admin credential's token and revoke every earlier admin token (for a credential that leaked); " +
        "acts on the state directly, safe while the server runs",
    )
    .action(async (o: StoreOptions) => {
      const store = await openStore(o);
      try {
        await adminCredentialRotate(store, out);
      } finally {
        if (store instanceof KubeStore) await store.close();
      }
    });
}

/**
 * Runs the command line (`argv` as in process.argv). Resolves when the command
 * is done (for `serve`: once it listens) or after --help/--version; rejects with
 * a coded Error whose message is one line, for the caller to print.
 */
export async function main(argv: string[], io: CliIo = processIo): Promise<void> {
  try {
    await buildProgram(io).parseAsync(argv);
  } catch (err) {
    if (err instanceof UsageError && err.commanderError.exitCode === 0) return; // --help, --version
    throw err;
  } finally {
    await closeOpenedStores();
  }
}

/**
 * `main` for in-process use: `args` are the user's arguments (no node/script),
 * an error is printed as "tether-server: CODE: message" on `io.stderr`. Returns
 * the exit code.
 */
export async function runCli(args: string[], io: CliIo = processIo): Promise<number> {
  try {
    await main(["node", "tether-server", ...args], io);
    return 0;
  } catch (err) {
    io.stderr(`tether-server: ${oneLine(err)}\n`);
    return 1;
  }
}

/** `runCli` with its output captured, for embedding and tests. */
export async function runCliCaptured(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  const code = await runCli(args, {
    stdout: (text) => {
      stdout += text;
    },
    stderr: (text) => {
      stderr += text;
    },
  });
  return { code, stdout, stderr };
}

/** `CODE: message` (formatError) on one line. */
function oneLine(err: unknown): string {
  return formatError(err).replace(/\s*\n\s*/g, " ");
}

export { TetherCliError };
