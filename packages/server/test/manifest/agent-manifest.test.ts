// The agent's manifest: the objects (names, namespace, RBAC, the hardened
// Deployment wired to the join Secret), the YAML they print as, deploy/ kept
// equal to the generator, and `tether-server agent-manifest` run as the CLI
// runs it, on a state directory and through a running server's admin API.
// Applying the manifest to a real apiserver is test/e2e/deploy.test.ts.
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t, { type Test } from "tap";
import { parseAllDocuments } from "yaml";
import {
  AGENT_YAML,
  agentYaml,
  PLACEHOLDER_JOIN,
  REPO_ROOT,
  SERVER_DEPLOYMENT_YAML,
  serverDeploymentYaml,
} from "../../../../scripts/generate-deploy.js";
import { ensureAdminCredential } from "../../src/admin/admin-credential.js";
import { runCliCaptured } from "../../src/cli/cli.js";
import { createLogger } from "../../src/logger.js";
import {
  AGENT_NAMESPACE,
  agentManifestObjects,
  CREDENTIALS_SECRET,
  ERR_TETHER_BAD_IMAGE,
  ERR_TETHER_BAD_NAMESPACE,
  JOIN_SECRET,
  manifestYaml,
  TETHER_IMAGE,
} from "../../src/manifest/agent-manifest.js";
import { hashToken } from "../../src/pki/tokens.js";
import { TetherServer } from "../../src/server.js";
import { FileStore } from "../../src/store/file-store.js";
import { ADMIN_CREDENTIAL_FILE } from "../../src/store/state-store.js";

const JOIN = {
  server: "https://tether.example.com:8443",
  cluster: "m1",
  token: "tether_abc",
  caHash: `sha256:${"a".repeat(64)}`,
};
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const CLUSTER_SCOPED = new Set(["Namespace", "ClusterRole", "ClusterRoleBinding"]);

// biome-ignore lint/suspicious/noExplicitAny: manifests are checked field by field against literal expectations
type Obj = any;

const byKind = (objects: Obj[], kind: string): Obj[] => objects.filter((o) => o.kind === kind);
const one = (objects: Obj[], kind: string): Obj => {
  const found = byKind(objects, kind);
  if (found.length !== 1) throw new Error(`expected one ${kind}, got ${found.length}`);
  return found[0];
};

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
}

const cli = (...args: string[]) => runCliCaptured(args);

async function tempDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "tether-agent-manifest-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** The join values in the Secret of a printed manifest, and the whole parsed stream. */
function parsePrinted(yamlText: string): { objects: Obj[]; join: Record<string, string> } {
  const objects = parseAllDocuments(yamlText).map((d) => d.toJS());
  return { objects, join: one(objects, "Secret").stringData };
}

t.test("the objects", async (t) => {
  const objects: Obj[] = agentManifestObjects({ join: JOIN });
  t.same(
    objects.map((o) => o.kind),
    [
      "Namespace",
      "ServiceAccount",
      "ClusterRole",
      "ClusterRoleBinding",
      "Role",
      "RoleBinding",
      "Secret",
      "Deployment",
    ],
    "the namespace first, so that one apply creates everything; the Deployment last",
  );
  for (const o of objects) {
    t.match(o.metadata.name, DNS_LABEL, `${o.kind} ${o.metadata.name} has a valid name`);
    if (CLUSTER_SCOPED.has(o.kind)) t.notOk(o.metadata.namespace, `${o.kind} is cluster-scoped`);
    else t.equal(o.metadata.namespace, AGENT_NAMESPACE, `${o.kind} is in ${AGENT_NAMESPACE}`);
  }
  t.equal(one(objects, "Namespace").metadata.name, AGENT_NAMESPACE);

  const sa = one(objects, "ServiceAccount");
  for (const binding of [...byKind(objects, "ClusterRoleBinding"), ...byKind(objects, "RoleBinding")]) {
    t.same(
      binding.subjects,
      [{ kind: "ServiceAccount", name: sa.metadata.name, namespace: AGENT_NAMESPACE }],
      `${binding.kind} binds the agent's service account only`,
    );
    const role = one(objects, binding.roleRef.kind);
    t.equal(
      binding.roleRef.name,
      role.metadata.name,
      `${binding.kind} refers to the ${role.kind} of the manifest`,
    );
  }
  t.same(
    one(objects, "ClusterRole").rules,
    [{ apiGroups: [""], resources: ["users", "groups", "serviceaccounts"], verbs: ["impersonate"] }],
    "cluster-wide: impersonate only",
  );
  const secretRules = one(objects, "Role").rules;
  t.same(
    secretRules.filter((r: Obj) => r.resourceNames),
    [
      {
        apiGroups: [""],
        resources: ["secrets"],
        resourceNames: [CREDENTIALS_SECRET],
        verbs: ["get", "update"],
      },
    ],
    "get and update only the credentials Secret",
  );
  t.same(
    secretRules.filter((r: Obj) => !r.resourceNames),
    [{ apiGroups: [""], resources: ["secrets"], verbs: ["create"] }],
    "create secrets (RBAC cannot limit create by name)",
  );

  const secret = one(objects, "Secret");
  t.equal(secret.metadata.name, JOIN_SECRET);
  t.same(secret.stringData, JOIN, "the Secret holds exactly the join values given");
});

t.test("the Deployment", async (t) => {
  const objects: Obj[] = agentManifestObjects({ join: JOIN });
  const deployment = one(objects, "Deployment");
  t.equal(deployment.spec.replicas, 2, "two agents: losing one fails only its streams");
  t.same(
    deployment.spec.strategy,
    { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 1, maxSurge: 0 } },
    "a rollout replaces one agent at a time",
  );
  t.equal(
    deployment.spec.template.spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0]
      .podAffinityTerm.topologyKey,
    "kubernetes.io/hostname",
    "preferably on different nodes",
  );
  const pod = deployment.spec.template.spec;
  t.same(
    deployment.spec.selector.matchLabels,
    Object.fromEntries(
      Object.entries(deployment.spec.template.metadata.labels).filter(([k]) =>
        Object.hasOwn(deployment.spec.selector.matchLabels, k),
      ),
    ),
    "the selector matches the pod's labels",
  );
  t.ok(Object.keys(deployment.spec.selector.matchLabels).length > 0, "the selector selects something");
  t.equal(pod.serviceAccountName, one(objects, "ServiceAccount").metadata.name);
  t.equal(pod.automountServiceAccountToken, true, "the agent uses its service-account token");
  t.equal(pod.securityContext.runAsNonRoot, true);
  t.ok(pod.securityContext.runAsUser > 0, "a numeric non-root user");
  t.equal(pod.securityContext.seccompProfile.type, "RuntimeDefault");
  t.equal(pod.containers.length, 1);
  const [container] = pod.containers;
  t.equal(container.image, TETHER_IMAGE);
  t.same(container.securityContext, {
    allowPrivilegeEscalation: false,
    privileged: false,
    readOnlyRootFilesystem: true,
    capabilities: { drop: ["ALL"] },
  });
  t.ok(container.resources.requests.cpu && container.resources.requests.memory, "requests set");
  t.ok(container.resources.limits.memory, "a memory limit");
  t.same(container.args, ["tether-agent", "--credentials-secret", CREDENTIALS_SECRET]);
  t.notOk(container.livenessProbe, "no probe: the agent serves no port");
  const secret = one(objects, "Secret");
  const env = Object.fromEntries(
    container.env.map((e: Obj) => {
      t.equal(e.valueFrom.secretKeyRef.name, secret.metadata.name, `${e.name} comes from the join Secret`);
      return [e.name, secret.stringData[e.valueFrom.secretKeyRef.key]];
    }),
  );
  t.same(
    env,
    {
      TETHER_SERVER: JOIN.server,
      TETHER_CLUSTER: JOIN.cluster,
      TETHER_JOIN_TOKEN: JOIN.token,
      TETHER_CA_HASH: JOIN.caHash,
    },
    "the agent's join variables resolve to the join values",
  );
});

t.test("image and namespace", async (t) => {
  const version = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")).version;
  t.ok(TETHER_IMAGE.endsWith(`:${version}`), "the default image is tagged with the package version");
  for (const image of ["registry.local:5000/team/tether:dev", `ghcr.io/x/tether@sha256:${"b".repeat(64)}`]) {
    const deployment = one(agentManifestObjects({ join: JOIN, image }), "Deployment");
    t.equal(deployment.spec.template.spec.containers[0].image, image, `image ${image}`);
  }
  const objects: Obj[] = agentManifestObjects({ join: JOIN, namespace: "edge-agent" });
  for (const o of objects) {
    if (!CLUSTER_SCOPED.has(o.kind)) t.equal(o.metadata.namespace, "edge-agent", `${o.kind} moves`);
  }
  t.equal(one(objects, "Namespace").metadata.name, "edge-agent");
  for (const b of [one(objects, "ClusterRoleBinding"), one(objects, "RoleBinding")]) {
    t.equal(b.subjects[0].namespace, "edge-agent", `${b.kind} follows the service account`);
  }
  t.not(
    one(objects, "ClusterRole").metadata.name,
    one(agentManifestObjects({ join: JOIN }), "ClusterRole").metadata.name,
    "two agents in one cluster don't share a ClusterRole",
  );
  for (const image of ["bad image", "Upper/case", "x\ny", `a${"b".repeat(600)}`, ""]) {
    t.equal(
      codeOf(() => agentManifestObjects({ join: JOIN, image })),
      ERR_TETHER_BAD_IMAGE,
      `refused: ${JSON.stringify(image).slice(0, 20)}`,
    );
  }
  for (const namespace of ["Tether", "-x", "a".repeat(64), "a.b", ""]) {
    t.equal(
      codeOf(() => agentManifestObjects({ join: JOIN, namespace })),
      ERR_TETHER_BAD_NAMESPACE,
      `refused namespace ${JSON.stringify(namespace).slice(0, 20)}`,
    );
  }
});

t.test("an egress proxy: its URL only in the join Secret, NO_PROXY in clear", async (t) => {
  const proxy = "http://bob:s3cret@proxy.corp.example:3128";
  const objects = agentManifestObjects({
    join: JOIN,
    egress: { proxy, noProxy: ".corp.example,10.0.0.0/8" },
  }) as Obj[];
  const secret = one(objects, "Secret");
  t.equal(secret.stringData.httpsProxy, proxy, "the Secret holds the URL");
  const env = one(objects, "Deployment").spec.template.spec.containers[0].env as Obj[];
  t.same(
    env.find((e) => e.name === "HTTPS_PROXY"),
    { name: "HTTPS_PROXY", valueFrom: { secretKeyRef: { name: JOIN_SECRET, key: "httpsProxy" } } },
    "the pod reads it from the Secret",
  );
  t.same(
    env.find((e) => e.name === "NO_PROXY"),
    { name: "NO_PROXY", value: ".corp.example,10.0.0.0/8" },
  );
  for (const o of objects.filter((o) => o.kind !== "Secret"))
    t.notMatch(JSON.stringify(o), "s3cret", `${o.kind} does not hold the password`);
  const plain = agentManifestObjects({ join: JOIN }) as Obj[];
  t.notOk(
    (one(plain, "Deployment").spec.template.spec.containers[0].env as Obj[]).some((e) =>
      /PROXY/.test(e.name),
    ),
    "no proxy: no proxy variables",
  );
  t.notOk("httpsProxy" in one(plain, "Secret").stringData);
  for (const bad of ["socks5://h:1", "not a url", "http://"]) {
    t.equal(
      codeOf(() => agentManifestObjects({ join: JOIN, egress: { proxy: bad } })),
      "ERR_TETHER_BAD_PROXY",
      bad,
    );
  }
  t.equal(
    codeOf(() => agentManifestObjects({ join: JOIN, egress: { noProxy: "a\nb" } })),
    "ERR_TETHER_BAD_PROXY",
    "a newline in NO_PROXY",
  );
  try {
    agentManifestObjects({ join: JOIN, egress: { proxy: "ftp://bob:s3cret@h" } });
  } catch (err) {
    t.notMatch((err as Error).message, "s3cret", "the refusal does not echo the URL");
  }
});

t.test("--agent-expose becomes the agent's --expose flags, checked first", async (t) => {
  const expose = [
    "ks-apiserver=http://ks-apiserver.kubesphere-system.svc:80",
    "prom=https://prom.monitoring.svc/p",
  ];
  const container = one(agentManifestObjects({ join: JOIN, expose }), "Deployment").spec.template.spec
    .containers[0];
  t.same(container.args, [
    "tether-agent",
    "--credentials-secret",
    CREDENTIALS_SECRET,
    "--expose",
    expose[0],
    "--expose",
    expose[1],
  ]);
  for (const bad of [
    "noequals",
    "Bad=http://x",
    "x=ftp://h",
    "x=http://u:p@h",
    "x=http://h/?q",
    "x=http://h/ y",
  ]) {
    t.equal(
      codeOf(() => agentManifestObjects({ join: JOIN, expose: [bad] })),
      "ERR_TETHER_BAD_EXPOSE",
      bad,
    );
  }
});

t.test("YAML", async (t) => {
  const objects = agentManifestObjects({ join: { ...JOIN, token: "tether_x: y # not a comment" } });
  const text = manifestYaml(objects, "line one\nline two");
  t.match(text, /^# line one\n# line two\n/, "the header is a comment");
  t.notMatch(text, /[&*]a\d/, "no YAML anchors or aliases (kubectl and humans read it)");
  const docs = parseAllDocuments(text);
  t.equal(docs.length, objects.length, "one document per object");
  t.same(
    docs.map((d) => d.errors),
    docs.map(() => []),
    "every document parses",
  );
  t.same(
    docs.map((d) => d.toJS()),
    objects,
    "and parses back to the same objects, awkward values included",
  );
});

t.test("deploy/ is what the generator writes", async (t) => {
  t.equal(
    readFileSync(AGENT_YAML, "utf8"),
    agentYaml(),
    "deploy/agent/agent.yaml is current (run npm run deploy:generate)",
  );
  const placeholders = one(
    parseAllDocuments(agentYaml()).map((d) => d.toJS()),
    "Secret",
  ).stringData;
  t.same(placeholders, PLACEHOLDER_JOIN, "deploy/agent carries placeholder join values, no token");
  const server = readFileSync(SERVER_DEPLOYMENT_YAML, "utf8");
  t.equal(
    server,
    serverDeploymentYaml(server),
    "deploy/server's image is TETHER_IMAGE (run npm run deploy:generate)",
  );
  // Every image reference anywhere in deploy/ is the one constant.
  const images: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (/\.ya?ml$/.test(entry.name)) {
        for (const m of readFileSync(path, "utf8").matchAll(/^\s*(?:-\s+)?image:\s*(\S+)/gm))
          images.push(m[1]!);
      }
    }
  };
  walk(join(REPO_ROOT, "deploy"));
  t.ok(images.length >= 2, "the server's and the agent's image");
  t.same([...new Set(images)], [TETHER_IMAGE], "one image everywhere");
});

t.test("agent-manifest on a state directory", async (t) => {
  const dir = await tempDir(t);
  const stateDir = join(dir, "state");
  const store = await FileStore.open(stateDir);
  const caHash = (await store.loadOrCreateCa()).caHash;
  await store.recordServerUrl("https://tether.example.com:8443");

  const proxied = await cli(
    "agent-manifest",
    "p1",
    "--state-dir",
    stateDir,
    "--agent-proxy",
    "http://u:pw@proxy:3128",
    "--agent-no-proxy",
    ".svc",
  );
  t.equal(proxied.code, 0, proxied.stderr);
  t.match(proxied.stdout, /httpsProxy: http:\/\/u:pw@proxy:3128/, "the CLI passes --agent-proxy");
  t.match(proxied.stdout, /name: NO_PROXY\n\s+value: \.svc/, "and --agent-no-proxy");
  const badProxy = await cli("agent-manifest", "p2", "--state-dir", stateDir, "--agent-proxy", "socks5://x");
  t.equal(badProxy.code, 1);
  t.match(badProxy.stderr, /ERR_TETHER_BAD_PROXY/);
  t.equal(await store.getCluster("p2"), undefined, "checked before anything is registered");
  // The agent starts with a bare host:port (http://, as curl and Go read it): the generator takes it too.
  const bare = await cli("agent-manifest", "p3", "--state-dir", stateDir, "--agent-proxy", "proxy:3128");
  t.equal(bare.code, 0, bare.stderr);
  t.match(bare.stdout, /httpsProxy: proxy:3128/, "a bare host:port is what the agent accepts");

  const first = await cli("agent-manifest", "m1", "--state-dir", stateDir);
  t.equal(first.code, 0, first.stderr);
  t.match(
    first.stderr,
    /^Cluster m1 was not registered: registered it \(auth impersonate/,
    "says it registered",
  );
  t.equal((await store.getCluster("m1"))?.auth, "impersonate", "the cluster is registered with defaults");
  const printed = parsePrinted(first.stdout);
  t.equal(printed.objects.length, 8);
  t.same(
    { ...printed.join, token: "" },
    { server: "https://tether.example.com:8443", cluster: "m1", token: "", caHash },
    "the recorded URL, the cluster and the store's CA hash",
  );
  const tokenRecord = async (token: string) =>
    (await store.listTokens()).find((r) => r.hash === hashToken(token));
  const issued = await tokenRecord(printed.join.token!);
  t.equal(issued?.kind, "join", "the token is a join token of the store");
  t.equal(issued?.cluster, "m1", "for this cluster");
  t.equal(issued?.usedAt, undefined, "unused");
  // ps shows a container's command line: the token may only be in the Secret the env refers to.
  for (const o of printed.objects as Obj[]) {
    const where = o.kind === "Secret" ? "" : JSON.stringify(o);
    t.notMatch(where, printed.join.token!, `${o.kind} ${o.metadata.name} does not hold the token`);
  }
  const container = (printed.objects as Obj[]).find((o) => o.kind === "Deployment")!.spec.template.spec
    .containers[0];
  t.notOk(
    [...(container.command ?? []), ...container.args].some((a: string) => /token/i.test(a)),
    "no token flag or token in the agent's argv",
  );

  const second = await cli(
    "agent-manifest",
    "m1",
    "--state-dir",
    stateDir,
    "--image",
    "registry.local/tether:dev",
    "--agent-namespace",
    "edge",
    "--server",
    "https://other.example.com",
  );
  t.equal(second.code, 0, second.stderr);
  t.equal(second.stderr, "", "a registered cluster: nothing to say");
  const again = parsePrinted(second.stdout);
  t.not(again.join.token, printed.join.token, "a new token each time");
  t.equal((await tokenRecord(again.join.token!))?.cluster, "m1");
  t.equal(again.join.server, "https://other.example.com", "--server goes into the Secret");
  t.equal(
    one(again.objects, "Deployment").spec.template.spec.containers[0].image,
    "registry.local/tether:dev",
  );
  t.equal(one(again.objects, "Deployment").metadata.namespace, "edge");

  const tokensBefore = (await store.listTokens()).length;
  for (const [args, pattern] of [
    [["--image", "no spaces"], /invalid image/],
    [["--agent-namespace", "Edge"], /invalid namespace/],
    [["--token-ttl", "forever"], /invalid duration/],
  ] as const) {
    const r = await cli("agent-manifest", "m2", "--state-dir", stateDir, ...args);
    t.equal(r.code, 1, `${args.join(" ")} fails`);
    t.equal(r.stdout, "", "prints no manifest");
    t.match(r.stderr, /^tether-server: [^\n]+\n$/, "one line");
    t.match(r.stderr, pattern);
  }
  t.equal((await store.listTokens()).length, tokensBefore, "a refused option issues no token");
  t.equal(await store.getCluster("m2"), undefined, "and registers nothing");

  const bad = await cli("agent-manifest", "Not_A_Name", "--state-dir", stateDir);
  t.equal(bad.code, 1);
  t.match(bad.stderr, /invalid cluster name/);

  const noUrl = join(dir, "fresh");
  const r = await cli("agent-manifest", "m3", "--state-dir", noUrl);
  t.equal(r.code, 1, "no server URL recorded and no --server");
  t.match(r.stderr, /no server URL/);
  t.equal(await (await FileStore.open(noUrl)).getCluster("m3"), undefined, "nothing registered");
});

t.test("agent-manifest through a running server's admin API (--credential)", async (t) => {
  const dir = await tempDir(t);
  const store = await FileStore.open(join(dir, "state"));
  const server = await TetherServer.start({
    store,
    host: "127.0.0.1",
    port: 0,
    log: createLogger({ level: "silent" }),
  });
  t.teardown(() => server.close());
  await store.recordServerUrl(server.url);
  await ensureAdminCredential(store, server.url, server.ca.certPem);
  const credential = join(store.dir, ADMIN_CREDENTIAL_FILE);
  // An empty state dir of its own: everything must come from the server.
  const elsewhere = join(dir, "elsewhere");

  const r = await cli("agent-manifest", "remote1", "--credential", credential, "--state-dir", elsewhere);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stderr, /Cluster remote1 was not registered: registered it/);
  t.ok(await store.getCluster("remote1"), "registered on the server");
  const { join: values } = parsePrinted(r.stdout);
  t.equal(values.server, server.url, "the server's URL");
  t.equal(values.caHash, server.ca.caHash, "the server's CA hash");
  const record = (await store.listTokens()).find((x) => x.hash === hashToken(values.token!));
  t.equal(record?.kind, "join", "a join token of the server's store");
  t.equal(record?.cluster, "remote1");

  const again = await cli("agent-manifest", "remote1", "--credential", credential, "--state-dir", elsewhere);
  t.equal(again.code, 0, again.stderr);
  t.equal(again.stderr, "", "already registered");
});
