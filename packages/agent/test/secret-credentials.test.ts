// SecretCredentials against a small fake apiserver over real HTTPS, for the
// edges a real apiserver won't produce on demand: a writer racing the agent
// (409), RBAC refusals (403) and a bad token (401), a Secret with missing or
// unreadable contents, oversized or non-Kubernetes answers. The claim that
// it works with Kubernetes is made in test/e2e/agent-secret.test.ts.
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import t, { type Test } from "tap";
import type { KubeTarget } from "../src/kube-target.js";
import { SecretCredentials } from "../src/secret-credentials.js";
import { makeCert } from "./lib/certs.js";

const NS = "tether-system";
const NAME = "tether-agent-credentials";
const ITEM = `/api/v1/namespaces/${NS}/secrets/${NAME}`;
const COLLECTION = `/api/v1/namespaces/${NS}/secrets`;

const b64url = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
/** Shaped like a projected service-account token; only its `sub` claim matters here. */
const TOKEN = `${b64url({ alg: "RS256" })}.${b64url({ sub: `system:serviceaccount:${NS}:tether-agent` })}.c2ln`;

const CREDS = { caPem: "CA PEM\n", certPem: "CERT PEM\n", keyPem: "KEY PEM\n" };

interface StoredSecret {
  metadata: { name: string; namespace: string; resourceVersion: string };
  type?: string;
  data?: Record<string, string>;
}

interface Seen {
  method: string;
  url: string;
  authorization: string | undefined;
  body: StoredSecret | undefined;
}

/** One Secret with resourceVersion semantics, plus knobs to misbehave. */
class FakeApiserver {
  secret: StoredSecret | undefined;
  seen: Seen[] = [];
  forbid = new Set<string>();
  status401 = false;
  /** Called before each write is handled, e.g. to let "someone else" write first. */
  beforeWrite: (() => void) | undefined;
  /** Replaces the whole answer to a GET. */
  rawGet: { status: number; body: string } | undefined;
  private rv = 100;
  private server!: Server;

  async start(): Promise<KubeTarget> {
    const ca = await makeCert({ cn: "fake-ca", ca: true });
    const serving = await makeCert({ cn: "fake-apiserver", issuer: ca, ip: "127.0.0.1" });
    this.server = createServer({ cert: serving.certPem, key: serving.keyPem }, (req, res) => {
      let text = "";
      req.setEncoding("utf8");
      req.on("data", (c: string) => {
        text += c;
      });
      req.on("end", () => {
        const body = text ? (JSON.parse(text) as StoredSecret) : undefined;
        this.seen.push({
          method: req.method ?? "",
          url: req.url ?? "",
          authorization: req.headers.authorization,
          body,
        });
        const [status, answer] = this.handle(req.method ?? "", req.url ?? "", body);
        res.writeHead(status, { "content-type": "application/json" });
        res.end(typeof answer === "string" ? answer : JSON.stringify(answer));
      });
    });
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    const port = (this.server.address() as AddressInfo).port;
    return {
      url: new URL(`https://127.0.0.1:${port}`),
      tls: { ca: ca.certPem },
      authorization: () => `Bearer ${TOKEN}`,
      description: "fake apiserver",
    };
  }

  stop(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  /** Someone other than the agent writes the Secret. */
  writeByOther(data: Record<string, string>): void {
    this.secret = { metadata: { name: NAME, namespace: NS, resourceVersion: String(++this.rv) }, data };
  }

  writes(): Seen[] {
    return this.seen.filter((s) => s.method !== "GET");
  }

  private status(code: number, reason: string): [number, object] {
    return [code, { kind: "Status", apiVersion: "v1", status: "Failure", reason, code, message: reason }];
  }

  private handle(method: string, url: string, body: StoredSecret | undefined): [number, object | string] {
    if (this.status401) return this.status(401, "Unauthorized");
    const verb = { GET: "get", POST: "create", PUT: "update" }[method] ?? "other";
    if (this.forbid.has(verb)) return this.status(403, "Forbidden");
    const dryRun = url.endsWith("?dryRun=All");
    const path = url.replace(/\?.*$/, "");
    if (method === "GET" && path === ITEM) {
      if (this.rawGet) return [this.rawGet.status, this.rawGet.body];
      return this.secret ? [200, this.secret] : this.status(404, "NotFound");
    }
    if (method !== "GET") this.beforeWrite?.();
    if (method === "POST" && path === COLLECTION) {
      if (this.secret) return this.status(409, "AlreadyExists");
      return this.store(body!, dryRun);
    }
    if (method === "PUT" && path === ITEM) {
      if (!this.secret) return this.status(404, "NotFound");
      if (body?.metadata.resourceVersion !== this.secret.metadata.resourceVersion)
        return this.status(409, "Conflict");
      return this.store(body, dryRun);
    }
    return this.status(405, "MethodNotAllowed");
  }

  private store(body: StoredSecret, dryRun: boolean): [number, StoredSecret] {
    const stored = { ...body, metadata: { ...body.metadata, resourceVersion: String(this.rv + 1) } };
    if (!dryRun) {
      this.rv++;
      this.secret = stored;
    }
    return [dryRun ? 200 : 201, stored];
  }
}

const pemOf = (secret: StoredSecret | undefined, key: string) =>
  Buffer.from(secret?.data?.[key] ?? "", "base64").toString("utf8");

async function setup(t: Test) {
  const api = new FakeApiserver();
  const target = await api.start();
  t.teardown(() => api.stop());
  return { api, target, store: new SecretCredentials(target, NS, NAME) };
}

t.test("creates the Secret, reads it back, replaces it at the version it read", async (t) => {
  const { api, target, store } = await setup(t);
  t.equal(await store.load(), undefined, "no Secret yet");
  await store.save(CREDS);
  t.equal(api.secret?.type, "kubernetes.io/tls");
  t.same(
    {
      ca: pemOf(api.secret, "ca.crt"),
      cert: pemOf(api.secret, "tls.crt"),
      key: pemOf(api.secret, "tls.key"),
    },
    { ca: CREDS.caPem, cert: CREDS.certPem, key: CREDS.keyPem },
    "key, certificate and CA in one object",
  );
  t.same(await new SecretCredentials(target, NS, NAME).load(), CREDS, "another store reads the same");

  const renewed = { ...CREDS, certPem: "RENEWED PEM\n", keyPem: "NEW KEY PEM\n" };
  const versionBefore = api.secret?.metadata.resourceVersion;
  await store.save(renewed);
  const last = api.writes().at(-1)!;
  t.equal(last.method, "PUT", "an existing Secret is updated");
  t.equal(last.body?.metadata.resourceVersion, versionBefore, "at the resourceVersion written last");
  t.equal(pemOf(api.secret, "tls.crt"), "RENEWED PEM\n");
  t.ok(
    api.seen.every((s) => s.authorization === `Bearer ${TOKEN}`),
    "every call carries the service-account token",
  );
});

t.test("a 409 re-reads and writes again", async (t) => {
  await t.test("someone updated the Secret since it was read", async (t) => {
    const { api, store } = await setup(t);
    await store.save(CREDS);
    let raced = false;
    api.beforeWrite = () => {
      if (raced) return;
      raced = true;
      api.writeByOther({ "tls.crt": "b3RoZXI=" });
    };
    await store.save({ ...CREDS, certPem: "MINE\n" });
    const puts = api.writes().filter((w) => w.method === "PUT");
    t.equal(puts.length, 2, "the conflicting PUT is retried once");
    t.not(
      puts[0]!.body?.metadata.resourceVersion,
      puts[1]!.body?.metadata.resourceVersion,
      "at the new version",
    );
    t.equal(pemOf(api.secret, "tls.crt"), "MINE\n", "the agent's write wins");
    t.equal(pemOf(api.secret, "tls.key"), CREDS.keyPem, "with its own key next to it");
  });

  await t.test("someone created the Secret after the agent found none", async (t) => {
    const { api, store } = await setup(t);
    t.equal(await store.load(), undefined);
    api.writeByOther({ "tls.crt": "b3RoZXI=" });
    await store.save(CREDS);
    t.same(
      api.writes().map((w) => w.method),
      ["POST", "PUT"],
      "create gets AlreadyExists, then updates what it re-read",
    );
    t.equal(pemOf(api.secret, "tls.crt"), CREDS.certPem);
  });

  await t.test("a Secret deleted under an update is created again", async (t) => {
    const { api, store } = await setup(t);
    await store.save(CREDS);
    api.secret = undefined;
    await store.save(CREDS);
    t.same(
      api.writes().map((w) => w.method),
      ["POST", "PUT", "POST"],
    );
    t.ok(api.secret, "the Secret exists again");
  });

  await t.test("a Secret that never holds still gives up with a coded error", async (t) => {
    const { api, store } = await setup(t);
    await store.save(CREDS);
    api.beforeWrite = () => api.writeByOther({});
    await t.rejects(store.save(CREDS), {
      code: "ERR_TETHER_AGENT_SECRET_CONFLICT",
      message: /kept changing.*another agent/,
    });
    t.equal(api.writes().length, 1 + 4, "a bounded number of attempts");
  });
});

t.test("RBAC refusals name the rule to add", async (t) => {
  const cases = [
    {
      verb: "get",
      act: (s: SecretCredentials) => s.load(),
      rule: /resourceNames: \["tether-agent-credentials"\], verbs: \["get", "update"\]/,
    },
    {
      verb: "create",
      act: (s: SecretCredentials) => s.save(CREDS),
      rule: /verbs: \["create"\]\} \(no resourceNames/,
    },
  ];
  for (const c of cases) {
    await t.test(c.verb, async (t) => {
      const { api, store } = await setup(t);
      api.forbid.add(c.verb);
      const err = await c.act(store).then(
        () => undefined,
        (e: Error & { code?: string }) => e,
      );
      t.equal(err?.code, "ERR_TETHER_AGENT_SECRET_FORBIDDEN");
      t.match(
        err?.message,
        new RegExp(
          `service account tether-system/tether-agent may not ${c.verb} Secret tether-system/tether-agent-credentials`,
        ),
      );
      t.match(err?.message, /Role in namespace tether-system/);
      t.match(err?.message, c.rule);
      t.notOk(err?.message.includes(TOKEN), "the token stays out of the message");
      t.notOk(err?.message.includes("\n"), "one line");
    });
  }

  await t.test("update", async (t) => {
    const { api, store } = await setup(t);
    await store.save(CREDS);
    api.forbid.add("update");
    await t.rejects(store.save(CREDS), {
      code: "ERR_TETHER_AGENT_SECRET_FORBIDDEN",
      message: /may not update/,
    });
  });

  await t.test("a token the apiserver rejects is not an RBAC problem", async (t) => {
    const { api, store } = await setup(t);
    api.status401 = true;
    await t.rejects(store.load(), { code: "ERR_TETHER_AGENT_SECRET_UNAUTHORIZED", message: /HTTP 401/ });
  });
});

t.test("checkWritable dry-runs the write: refusals surface, nothing is stored", async (t) => {
  const { api, store } = await setup(t);
  await store.checkWritable();
  const probe = api.writes()[0]!;
  t.equal(probe.method, "POST");
  t.match(probe.url, /\?dryRun=All$/, "a server-side dry run");
  t.equal(api.secret, undefined, "nothing was written");

  api.forbid.add("create");
  await t.rejects(store.checkWritable(), {
    code: "ERR_TETHER_AGENT_SECRET_FORBIDDEN",
    message: /may not create/,
  });
  api.forbid.clear();

  await store.save(CREDS);
  api.forbid.add("update");
  await t.rejects(store.checkWritable(), {
    code: "ERR_TETHER_AGENT_SECRET_FORBIDDEN",
    message: /may not update/,
  });
  t.equal(pemOf(api.secret, "tls.crt"), CREDS.certPem, "the stored Secret is untouched");
});

t.test("unusable contents are a coded error, and a save replaces them", async (t) => {
  const { api, store } = await setup(t);
  api.writeByOther({ "tls.crt": Buffer.from("CERT").toString("base64") });
  await t.rejects(store.load(), {
    code: "ERR_TETHER_AGENT_STATE_CORRUPT",
    message: /lacks ca.crt, tls.crt or tls.key/,
  });
  await store.save(CREDS);
  t.same(await store.load(), CREDS, "the corrupt Secret was replaced in place");
  t.equal(api.writes()[0]?.method, "PUT", "at the version the failed load read");
});

t.test("answers that are not a Secret are refused with bounded effort", async (t) => {
  const { api, store } = await setup(t);
  api.rawGet = { status: 200, body: "<html>a proxy login page</html>" };
  await t.rejects(store.load(), { code: "ERR_TETHER_AGENT_SECRET_API", message: /without a Secret/ });
  api.rawGet = { status: 200, body: JSON.stringify({ padding: "x".repeat(2 << 20) }) };
  await t.rejects(store.load(), { code: "ERR_TETHER_AGENT_SECRET_UNREACHABLE", message: /larger than/ });
  api.rawGet = { status: 500, body: JSON.stringify({ kind: "Status", message: "etcdserver: timeout" }) };
  await t.rejects(store.load(), {
    code: "ERR_TETHER_AGENT_SECRET_API",
    message: /HTTP 500: etcdserver: timeout/,
  });
});

t.test("an apiserver that isn't there is named", async (t) => {
  const api = new FakeApiserver();
  const target = await api.start();
  await api.stop();
  await t.rejects(new SecretCredentials(target, NS, NAME).load(), {
    code: "ERR_TETHER_AGENT_SECRET_UNREACHABLE",
    message: new RegExp(`cannot get Secret tether-system/tether-agent-credentials at ${target.url.host}`),
  });
});
