// tether-agent's command line.

import { readFileSync } from "node:fs";
import { codedError } from "@tether/common";
import { Command, InvalidArgumentError, Option } from "commander";
import { DEFAULT_OPTIONS } from "@tether/tunnel";
import { pino } from "pino";
import { TetherAgent } from "./agent.js";
import { DEFAULT_RECONNECT_SPREAD_MS } from "./backoff.js";
import { type CredentialStore, type Credentials, CredentialsDir } from "./credentials.js";
import { type EgressProxy, parseProxyUrl, proxyFor } from "./egress-proxy.js";
import {
  duplicateNames,
  ERR_TETHER_AGENT_EXPOSE,
  type ExposedService,
  parseExpose,
} from "./exposed-services.js";
import { startupIdentity } from "./identity.js";
import {
  inClusterTarget,
  type KubeTarget,
  kubeconfigTarget,
  SERVICE_ACCOUNT_DIR,
  TargetConfigError,
} from "./kube-target.js";
import { AgentMetrics, portOf } from "./metrics.js";
import { SecretCredentials } from "./secret-credentials.js";
import { VERSION } from "./version.js";

export { VERSION };

interface RunOptions {
  server: string;
  cluster?: string;
  token?: string;
  tokenFile?: string;
  caHash?: string;
  stateDir: string;
  credentialsSecret?: string;
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  kubeconfig?: string;
  context?: string;
  serviceAccountDir: string;
  keepalive: number;
  maxStreams: number;
  deadPeerTimeout: number;
  reconnectSpread: number;
  metricsAddress?: { host: string; port: number };
  proxy?: string;
  expose: ExposedService[];
  exposeCa?: string;
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

function count(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < 1)
    throw new InvalidArgumentError("must be a positive integer");
  return n;
}

function hostPort(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new InvalidArgumentError("must be host:port, e.g. 127.0.0.1:9464");
  return { host: m[1] ?? m[2]!, port };
}

function secretName(value: string): string {
  if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(value)) {
    throw new InvalidArgumentError("a Secret name is lowercase letters, digits, '-' and '.', at most 253");
  }
  return value;
}

/** The agent's identity: --ca-file/--cert-file/--key-file, else the saved or a newly joined one. */
async function credentials(
  opts: Omit<RunOptions, "proxy"> & { proxy?: EgressProxy | undefined },
  store: CredentialStore,
  log: { info(o: object, m: string): void; warn(o: object, m: string): void },
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
  return startupIdentity(opts, store, log);
}

/** The namespace this pod runs in (the service account's), where its credentials Secret lives. */
function podNamespace(saDir: string): string {
  try {
    const ns = readFileSync(`${saDir}/namespace`, "utf8").trim();
    if (ns) return ns;
  } catch {}
  throw new TargetConfigError(
    `--credentials-secret keeps the Secret in the pod's namespace, read from ${saDir}/namespace: ` +
      "mount the service account (automountServiceAccountToken) or use --state-dir",
  );
}

export function buildProgram(): Command {
  return new Command("tether-agent")
    .description(
      "The member side of Tether: dials out to tether-server and forwards its requests to this cluster's Kubernetes API",
    )
    .version(VERSION, "-v, --version", "print the version")
    .helpOption("-h, --help", "show help")
    .showHelpAfterError("(run tether-agent --help for usage)")
    .addOption(
      new Option("--server <url>", "tether-server's URL, e.g. https://tether.example.com:8443")
        .env("TETHER_SERVER")
        .makeOptionMandatory(),
    )
    .addOption(
      new Option("--cluster <name>", "this cluster's name, as registered with tether-server cluster add").env(
        "TETHER_CLUSTER",
      ),
    )
    .addOption(
      new Option(
        "--token <token>",
        "one-time join token (only needed until the agent has joined); prefer TETHER_JOIN_TOKEN or --token-file: " +
          "a command line is visible to every user of the machine (ps)",
      ).env("TETHER_JOIN_TOKEN"),
    )
    .addOption(
      new Option("--token-file <path>", "read the one-time join token from this file").conflicts("token"),
    )
    .addOption(
      new Option(
        "--ca-hash <sha256:hex>",
        "pin of the server's CA, printed by tether-server cluster add",
      ).env("TETHER_CA_HASH"),
    )
    .option(
      "--state-dir <dir>",
      "where the agent keeps its key and certificate",
      process.env.TETHER_AGENT_STATE_DIR ?? "./.tether-agent",
    )
    .addOption(
      new Option(
        "--credentials-secret <name>",
        "keep the key and certificate in this Secret of the pod's namespace instead of --state-dir (in-cluster)",
      )
        .env("TETHER_CREDENTIALS_SECRET")
        .argParser(secretName),
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
      new Option(
        "--proxy <url>",
        "reach tether-server through this HTTP forward proxy (http://[user:password@]host:port), instead of " +
          "HTTPS_PROXY; NO_PROXY still applies. Prefer HTTPS_PROXY for a proxy URL with a password: a command line is visible (ps)",
      ).argParser((v) => {
        if (v.trim() === "")
          throw new InvalidArgumentError(
            "empty; to dial the server directly, leave --proxy out and set NO_PROXY=*",
          );
        parseProxyUrl(v, "--proxy");
        return v;
      }),
    )
    .addOption(
      new Option(
        "--expose <name=url>",
        "also serve this in-cluster service at /clusters/<cluster>/services/<name>/ on tether-server, e.g. " +
          "prometheus=http://prometheus.monitoring.svc:9090 (repeatable); only users the server lists for it may use it",
      )
        .default([])
        .argParser((v: string, previous: ExposedService[]) => {
          // A coded error, not commander's, which would echo the value: a URL may hold a password.
          let service: ExposedService;
          try {
            service = parseExpose(v);
          } catch (err) {
            throw codedError(ERR_TETHER_AGENT_EXPOSE, `--expose: ${(err as Error).message}`);
          }
          const all = [...previous, service];
          const twice = duplicateNames(all);
          if (twice.length > 0)
            throw codedError(ERR_TETHER_AGENT_EXPOSE, `--expose: ${twice[0]} is exposed twice`);
          return all;
        }),
    )
    .option(
      "--expose-ca <path>",
      "PEM CAs that https --expose services' certificates may chain to, besides the system's",
    )
    .addOption(
      new Option("--keepalive <seconds>", "seconds between tunnel pings").default(10).argParser(seconds),
    )
    .addOption(
      new Option(
        "--max-streams <n>",
        "streams (requests, watches, upgrades) open at once on the tunnel, and apiserver connections at most",
      )
        .default(DEFAULT_OPTIONS.maxStreams)
        .argParser(count),
    )
    .addOption(
      new Option("--dead-peer-timeout <seconds>", "seconds of silence before the server is taken for dead")
        .default(30)
        .argParser(seconds),
    )
    .addOption(
      new Option(
        "--reconnect-spread <seconds>",
        "after the server's go-away, dial a new session at a random moment within this many seconds (spreads a fleet's reconnects)",
      )
        .default(DEFAULT_RECONNECT_SPREAD_MS / 1000)
        .argParser(seconds),
    )
    .addOption(
      new Option(
        "--metrics-address <host:port>",
        "serve Prometheus metrics at http://<host:port>/metrics, without authentication (off by default; e.g. 127.0.0.1:9464)",
      )
        .env("TETHER_METRICS_ADDRESS")
        .argParser(hostPort),
    );
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  program.action(async (opts: RunOptions) => {
    const log = pino({ name: "tether-agent", level: process.env.TETHER_LOG_LEVEL ?? "info" });
    if (opts.tokenFile) opts.token = readFlagFile(opts.tokenFile, "--token-file").trim();
    else if (opts.token && program.getOptionValueSource("token") === "cli") {
      log.warn(
        {},
        "the join token was given with --token, where other users of this machine can read it (ps): " +
          "use TETHER_JOIN_TOKEN or --token-file",
      );
    }
    const proxy = proxyFor(new URL(opts.server), opts.proxy);
    if (proxy?.authorization && proxy.source === "--proxy") {
      log.warn(
        { proxy: proxy.display },
        "the proxy's password was given with --proxy, where other users of this machine can read it (ps): use HTTPS_PROXY",
      );
    }
    const targetOf = (): KubeTarget =>
      opts.kubeconfig
        ? kubeconfigTarget(opts.kubeconfig, opts.context)
        : inClusterTarget(process.env, opts.serviceAccountDir);
    // Only the Secret store needs the apiserver before the credentials are read.
    let target: KubeTarget | undefined = opts.credentialsSecret ? targetOf() : undefined;
    const credentialStore: CredentialStore =
      target && opts.credentialsSecret
        ? new SecretCredentials(target, podNamespace(opts.serviceAccountDir), opts.credentialsSecret)
        : new CredentialsDir(opts.stateDir);
    const { caPem, certPem, keyPem } = await credentials({ ...opts, proxy }, credentialStore, log);
    target ??= targetOf();
    const metrics = opts.metricsAddress ? new AgentMetrics() : undefined;
    const metricsServer =
      metrics && opts.metricsAddress
        ? await metrics.listen(opts.metricsAddress.host, opts.metricsAddress.port)
        : undefined;
    if (metricsServer && opts.metricsAddress) {
      log.info(
        { host: opts.metricsAddress.host, port: portOf(metricsServer) },
        "serving metrics at /metrics",
      );
    }
    const agent = new TetherAgent({
      server: opts.server,
      caPem,
      certPem,
      keyPem,
      target,
      credentialStore,
      ...(proxy ? { proxy } : {}),
      expose: opts.expose,
      ...(opts.exposeCa ? { exposeCa: readFlagFile(opts.exposeCa, "--expose-ca") } : {}),
      tunnel: {
        keepAliveInterval: opts.keepalive * 1000,
        deadPeerTimeout: opts.deadPeerTimeout * 1000,
        maxStreams: opts.maxStreams,
      },
      reconnectSpreadMs: opts.reconnectSpread * 1000,
      log,
      ...(metrics ? { metrics } : {}),
    });
    log.info(
      {
        target: target.description,
        server: opts.server,
        proxy: proxy?.display ?? "none",
        expose: opts.expose.map((s) => `${s.name}=${s.url.origin}${s.base}`),
        version: VERSION,
      },
      "starting",
    );
    agent.start();
    const stop = () => {
      log.info({}, "stopping");
      metricsServer?.close();
      // The server sends new streams to the member's other agents while ours finish.
      void agent.stop({ drainMs: 10_000 }).then(() => process.exit(0));
    };
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
  });
  await program.parseAsync(argv);
}
