// The admin commands' flags (cluster add|list|remove, join-token, kubeconfig,
// agent-manifest, kubefed, rotate-admin-credential); the work is in
// admin-commands.ts, behind a ClusterAdmin.

import { type Command, InvalidArgumentError, Option } from "commander";
import {
  DEFAULT_JOIN_TOKEN_TTL,
  DEFAULT_KUBEFED_TOKEN_TTL,
  DEFAULT_USER_TOKEN_TTL,
} from "../admin/admin-input.js";
import { AGENT_NAMESPACE, agentManifest } from "../manifest/agent-manifest.js";
import {
  DEFAULT_KUBEFED_SERVICE_ACCOUNT,
  DEFAULT_KUBEFED_USER,
  KUBEFED_NAMESPACE,
  kubefed,
} from "../manifest/kubefed.js";
import { normalizeClusterDomain } from "../proxy/host-routing.js";
import { KubeStore } from "../store/kube-store.js";
import {
  type AdminContext,
  adminCredentialRotate,
  clusterAdd,
  clusterList,
  clusterRemove,
  joinToken,
  kubeconfig,
  serviceAllow,
  serviceRemove,
} from "./admin-commands.js";
import type { CliIo } from "./cli-io.js";
import { collect, serverOption } from "./option-parsers.js";
import type { OutputFormat } from "./output-format.js";
import { addAdminOptions, addStoreOptions, adminFor, openStore, type StoreOptions } from "./store-options.js";

function adminContext(opts: StoreOptions, out: (text: string) => void): AdminContext {
  return { out, admin: (serverFlag) => adminFor(opts, serverFlag) };
}

export function addClusterCommands(program: Command, out: (text: string) => void): void {
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
  addServiceCommands(cluster, out);
  addAdminOptions(cluster.command("remove"))
    .alias("rm")
    .description("remove a cluster: revoke its agent certificates, delete its tokens and its record")
    .argument("<name>", "the cluster's name")
    .addOption(serverOption())
    .action(async (name: string, o: StoreOptions & { server?: string }) => {
      await clusterRemove(adminContext(o, out), name, o.server ? { server: o.server } : {});
    });
}

/** `cluster service allow|remove`: who may use the in-cluster services an agent exposes (--expose). */
function addServiceCommands(cluster: Command, out: (text: string) => void): void {
  const service = cluster
    .command("service")
    .description(
      "who may use an in-cluster service the cluster's agent exposes (tether-agent --expose NAME=URL)",
    )
    .helpOption("-h, --help", "show help");
  addAdminOptions(service.command("allow"))
    .description(
      "allow users or groups to use service SERVICE of cluster CLUSTER at /clusters/CLUSTER/services/SERVICE/ " +
        "(added to those allowed already; a service nobody was allowed is usable by nobody)",
    )
    .argument("<cluster>", "the cluster's name")
    .argument("<service>", "the NAME the agent's --expose NAME=URL gives")
    .addOption(new Option("--user <user>", "a user to allow (repeatable)").default([]).argParser(collect))
    .addOption(new Option("--group <group>", "a group to allow (repeatable)").default([]).argParser(collect))
    .addOption(serverOption())
    .addOption(new Option("-o, --output <format>", "print as json or yaml").choices(["json", "yaml"]))
    .action(
      async (
        name: string,
        svc: string,
        o: StoreOptions & { user: string[]; group: string[]; server?: string; output?: "json" | "yaml" },
        cmd: Command,
      ) => {
        if (o.user.length === 0 && o.group.length === 0)
          cmd.error("give at least one --user or --group to allow");
        await serviceAllow(adminContext(o, out), name, svc, {
          users: o.user,
          groups: o.group,
          server: o.server,
          output: o.output,
        });
      },
    );
  addAdminOptions(service.command("remove"))
    .alias("rm")
    .description("allow nobody to use service SERVICE of cluster CLUSTER any more")
    .argument("<cluster>", "the cluster's name")
    .argument("<service>", "the service's NAME")
    .addOption(serverOption())
    .action(async (name: string, svc: string, o: StoreOptions & { server?: string }) => {
      await serviceRemove(adminContext(o, out), name, svc, { server: o.server });
    });
}

export function addJoinToken(program: Command, out: (text: string) => void): void {
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

export function addAgentManifest(program: Command, io: CliIo): void {
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
    .addOption(
      new Option(
        "--agent-proxy <url>",
        "the agent reaches tether-server through this HTTP proxy, http://[user:password@]host:port (kept in the join Secret)",
      ),
    )
    .addOption(new Option("--agent-no-proxy <list>", "NO_PROXY for the agent: hosts, .domains, CIDR ranges"))
    .addOption(
      new Option(
        "--agent-expose <name=url>",
        "the agent also serves this in-cluster service (its --expose NAME=URL; repeatable)",
      )
        .default([])
        .argParser(collect),
    )
    .addOption(serverOption())
    .action(
      async (
        name: string,
        o: StoreOptions & {
          image?: string;
          agentNamespace: string;
          tokenTtl: string;
          server?: string;
          agentProxy?: string;
          agentNoProxy?: string;
          agentExpose: string[];
        },
      ) => {
        await agentManifest({ ...adminContext(o, io.stdout), note: io.stderr }, name, {
          namespace: o.agentNamespace,
          tokenTtl: o.tokenTtl,
          egress: { proxy: o.agentProxy, noProxy: o.agentNoProxy },
          expose: o.agentExpose,
          ...(o.image ? { image: o.image } : {}),
          ...(o.server ? { server: o.server } : {}),
        });
      },
    );
}

export function addKubefed(program: Command, out: (text: string) => void): void {
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
    .addOption(
      new Option(
        "--auth <kind>",
        "tether-token: a Tether user token in the Secret; service-account: KubeFed's own service-account token (serve --host-service-accounts)",
      )
        .choices(["tether-token", "service-account"])
        .default("tether-token"),
    )
    .addOption(
      new Option(
        "--service-account <name>",
        "--auth service-account: the controller's service account in --kubefed-namespace",
      ).default(DEFAULT_KUBEFED_SERVICE_ACCOUNT),
    )
    .addOption(serverOption())
    .addOption(clusterDomainOption("apiEndpoint https://NAME.<domain>:<port> (needs DNS for *.<domain>)"))
    .addOption(new Option("-o, --output <format>", "yaml or json").choices(["yaml", "json"]).default("yaml"))
    .action(
      async (
        name: string,
        o: StoreOptions & {
          auth: "tether-token" | "service-account";
          serviceAccount: string;
          user: string;
          group: string[];
          ttl: string;
          kubefedNamespace: string;
          server?: string;
          output: "yaml" | "json";
          clusterDomain?: string;
        },
      ) => {
        await kubefed(adminContext(o, out), name, {
          auth: o.auth,
          serviceAccount: o.serviceAccount,
          clusterDomain: o.clusterDomain,
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

/** Host routing for a printed client configuration: the domain `serve --cluster-domain` was given. */
function clusterDomainOption(form: string): Option {
  return new Option("--cluster-domain <domain>", `print the host form: ${form}`).argParser((v) => {
    const d = normalizeClusterDomain(v);
    if (!d) throw new InvalidArgumentError("a DNS domain of two or more labels, e.g. clusters.example.com");
    return d;
  });
}

export function addKubeconfig(program: Command, out: (text: string) => void): void {
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
    .addOption(
      clusterDomainOption("tls-server-name NAME.<domain> on the server's address, without /clusters/NAME"),
    )
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
          clusterDomain?: string;
        },
      ) => {
        await kubeconfig(adminContext(o, out), name, {
          clusterDomain: o.clusterDomain,
          user: o.user,
          groups: o.group,
          ttl: o.ttl,
          server: o.server,
          output: o.output,
        });
      },
    );
}

export function addRotateAdminCredential(program: Command, out: (text: string) => void): void {
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
