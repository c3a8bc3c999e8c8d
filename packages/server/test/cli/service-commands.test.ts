// `cluster service allow|remove`, locally on a state directory and remotely
// through a running server's admin API (--credential): the grants land in the
// cluster's record, add up, show in cluster list, and bad input gets a coded
// one-line error.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t, { type Test } from "tap";
import { ensureAdminCredential } from "../../src/admin/admin-credential.js";
import { runCliCaptured } from "../../src/cli/cli.js";
import { createLogger } from "../../src/logger.js";
import { AuditLog } from "../../src/observe/audit-log.js";
import { TetherServer } from "../../src/server.js";
import { FileStore } from "../../src/store/file-store.js";
import { ADMIN_CREDENTIAL_FILE } from "../../src/store/state-store.js";

const cli = (...args: string[]) => runCliCaptured(args);

async function tempStateDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "tether-service-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return join(dir, "state");
}

t.test("locally: allow adds users and groups, remove drops the list", async (t) => {
  const state = await tempStateDir(t);
  const at = ["--state-dir", state];
  const added = await cli("cluster", "add", "m1", ...at, "--server", "https://tether.example.com:8443");
  t.equal(added.code, 0, added.stderr);
  const first = await cli("cluster", "service", "allow", "m1", "prometheus", ...at, "--user", "alice");
  t.equal(first.code, 0, first.stderr);
  t.match(first.stdout, /Service prometheus of cluster m1 may be used by:/);
  t.match(first.stdout, /\/clusters\/m1\/services\/prometheus\//);
  const second = await cli(
    "cluster",
    "service",
    "allow",
    "m1",
    "prometheus",
    ...at,
    "--group",
    "sre",
    "--user",
    "alice",
    "-o",
    "json",
  );
  t.equal(second.code, 0, second.stderr);
  t.same(JSON.parse(second.stdout), {
    cluster: "m1",
    service: "prometheus",
    allowedUsers: ["alice"],
    allowedGroups: ["sre"],
  });
  const store = await FileStore.open(state);
  t.same((await store.getCluster("m1"))?.services, {
    prometheus: { allowedUsers: ["alice"], allowedGroups: ["sre"] },
  });
  const listed = await cli("cluster", "list", ...at, "-o", "json");
  t.same(JSON.parse(listed.stdout).clusters[0].services, {
    prometheus: { allowedUsers: ["alice"], allowedGroups: ["sre"] },
  });
  const removed = await cli("cluster", "service", "remove", "m1", "prometheus", ...at);
  t.equal(removed.code, 0, removed.stderr);
  t.match(removed.stdout, /nobody may use it now/);
  t.equal((await store.getCluster("m1"))?.services, undefined);
  const again = await cli("cluster", "service", "rm", "m1", "prometheus", ...at);
  t.match(again.stdout, /allowed nobody already/);
});

t.test("locally: bad input is refused with a code", async (t) => {
  const state = await tempStateDir(t);
  const at = ["--state-dir", state];
  await cli("cluster", "add", "m1", ...at, "--server", "https://tether.example.com:8443");
  const badName = await cli("cluster", "service", "allow", "m1", "Not_A_Label", ...at, "--user", "a");
  t.equal(badName.code, 1);
  t.match(badName.stderr, /ERR_TETHER_BAD_SERVICE_NAME/);
  const tooLong = await cli("cluster", "service", "allow", "m1", "a".repeat(56), ...at, "--user", "a");
  t.match(tooLong.stderr, /ERR_TETHER_BAD_SERVICE_NAME/);
  const unknown = await cli("cluster", "service", "allow", "nope", "web", ...at, "--user", "a");
  t.match(unknown.stderr, /ERR_TETHER_UNKNOWN_CLUSTER/);
  const reserved = await cli("cluster", "service", "allow", "m1", "web", ...at, "--group", "system:masters");
  t.match(reserved.stderr, /ERR_TETHER_RESERVED_GROUP/);
  const nobody = await cli("cluster", "service", "allow", "m1", "web", ...at);
  t.equal(nobody.code, 1);
  t.match(nobody.stderr, /at least one --user or --group/);
});

t.test("remotely through the admin API, the same", async (t) => {
  const dir = await tempStateDir(t);
  const store = await FileStore.open(dir);
  const lines: Record<string, unknown>[] = [];
  const audit = new AuditLog({
    write: (line) => lines.push(JSON.parse(line) as Record<string, unknown>),
    reopen() {},
    close: async () => {},
  });
  const server = await TetherServer.start({
    store,
    host: "127.0.0.1",
    port: 0,
    log: createLogger({ level: "silent" }),
    audit,
  });
  t.teardown(() => server.close());
  await store.recordServerUrl(server.url);
  await ensureAdminCredential(store, server.url, server.ca.certPem);
  const remote = ["--credential", join(store.dir!, ADMIN_CREDENTIAL_FILE)];
  t.equal((await cli("cluster", "add", "m1", ...remote)).code, 0);
  const allowed = await cli(
    "cluster",
    "service",
    "allow",
    "m1",
    "web",
    ...remote,
    "--user",
    "alice",
    "--group",
    "sre",
    "-o",
    "json",
  );
  t.equal(allowed.code, 0, allowed.stderr);
  t.same(JSON.parse(allowed.stdout).allowedGroups, ["sre"]);
  t.same((await store.getCluster("m1"))?.services, {
    web: { allowedUsers: ["alice"], allowedGroups: ["sre"] },
  });
  const bad = await cli("cluster", "service", "allow", "m1", "..", ...remote, "--user", "a");
  t.match(bad.stderr, /ERR_TETHER_BAD_SERVICE_NAME/);
  const removed = await cli("cluster", "service", "remove", "m1", "web", ...remote);
  t.equal(removed.code, 0, removed.stderr);
  t.equal((await store.getCluster("m1"))?.services, undefined);
  t.match(
    lines.filter((l) => l.kind === "admin" && String(l.action).startsWith("service.")),
    [
      { action: "service.allow", cluster: "m1", service: "web", code: 200 },
      { action: "service.remove", cluster: "m1", service: "web", code: 200 },
    ],
    "the admin audit lines name the action and the service",
  );
});
