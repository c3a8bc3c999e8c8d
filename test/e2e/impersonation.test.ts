// Issue 16: kubectl --as / --as-group through Tether is honoured only when the
// member's RBAC lets the caller's Tether identity impersonate what it asks
// for (checked on the member with SelfSubjectAccessReviews), then applied —
// so `auth can-i --as` answers what it answers directly — and refused with a
// 403 naming what was refused otherwise; never silently dropped. Raw
// requests cover what kubectl cannot send: header case and duplicates,
// groups without a user, unknown Impersonate-* headers, Impersonate-Extra.
import { request } from "node:https";
import { AuditLog } from "@tether/server";
import t from "tap";
import { startClusters } from "../kube/index.js";
import { bindTetherAdmins, startTether, tokenFor } from "./fixture.js";

const set = await startClusters(1);
t.teardown(() => set.stop());
const member = set.clusters[0]!;
await bindTetherAdmins(member);
await member.createPod("default", "box");
const RBAC = "rbac.authorization.k8s.io";
// bob may impersonate users and service accounts, but not groups.
await member.api(
  "POST",
  `/apis/${RBAC}/v1/clusterroles`,
  {
    metadata: { name: "impersonate-users" },
    rules: [{ apiGroups: [""], resources: ["users", "serviceaccounts"], verbs: ["impersonate"] }],
  },
  [409],
);
await member.api(
  "POST",
  `/apis/${RBAC}/v1/clusterrolebindings`,
  {
    metadata: { name: "bob-impersonates-users" },
    roleRef: { apiGroup: RBAC, kind: "ClusterRole", name: "impersonate-users" },
    subjects: [{ apiGroup: RBAC, kind: "User", name: "tether:bob" }],
  },
  [409],
);
// The service account "reader" may read pods in default; "nobody" may do nothing.
await member.api(
  "POST",
  `/apis/${RBAC}/v1/namespaces/default/rolebindings`,
  {
    metadata: { name: "reader-views" },
    roleRef: { apiGroup: RBAC, kind: "ClusterRole", name: "view" },
    subjects: [{ kind: "ServiceAccount", name: "reader", namespace: "default" }],
  },
  [409],
);
const auditLines: Record<string, unknown>[] = [];
const audit = new AuditLog({
  write: (line) => auditLines.push(JSON.parse(line) as Record<string, unknown>),
  reopen: () => {},
  close: async () => {},
});
const tether = await startTether({ audit });
t.teardown(() => tether.stop());
await tether.registerCluster("m1");
await tether.startAgent("m1", member);
await tether.registerCluster("m1pass", "passthrough");
await tether.startAgent("m1pass", member);
const alice = await tether.userKubeconfig("m1", "alice", ["admins"]); // cluster-admin: may impersonate anyone
const bob = await tether.userKubeconfig("m1", "bob");
const carol = await tether.userKubeconfig("m1", "carol"); // may impersonate nobody

const NOBODY = "system:serviceaccount:default:nobody";
const READER = "system:serviceaccount:default:reader";

t.test("auth can-i --as through Tether answers what it answers directly", async (t) => {
  for (const [args, expected] of [
    [["auth", "can-i", "delete", "nodes", `--as=${NOBODY}`], "no"],
    [["auth", "can-i", "list", "pods", "-n", "default", `--as=${READER}`], "yes"],
    [["auth", "can-i", "list", "pods", "-n", "default", "--as=dave", "--as-group=tether:admins"], "yes"],
  ] as const) {
    const direct = await member.kubectl([...args]);
    const via = await member.kubectl([...args], { kubeconfig: alice });
    t.equal(direct.stdout.trim(), expected, `directly: ${args.join(" ")}`);
    t.equal(via.stdout.trim(), direct.stdout.trim(), `through Tether: ${args.join(" ")}`);
    t.equal(via.code, direct.code);
  }
});

t.test("auth can-i --as is refused for a caller the member does not let impersonate", async (t) => {
  const via = await member.kubectl(["auth", "can-i", "delete", "nodes", `--as=${NOBODY}`], {
    kubeconfig: carol,
  });
  t.not(via.code, 0);
  t.notMatch(via.stdout, /yes/);
  t.match(
    via.stderr,
    /Forbidden.*user "carol" may not impersonate service account "default\/nobody" on cluster "m1"/,
  );
});

t.test("get pods --as acts as the requested identity, or is refused", async (t) => {
  const asReader = await member.kubectl(["get", "pods", "-n", "default", "-o", "name", `--as=${READER}`], {
    kubeconfig: alice,
  });
  t.equal(asReader.code, 0, asReader.stderr);
  t.match(asReader.stdout, /pod\/box/);
  const asNobody = await member.kubectl(["get", "pods", "-n", "default", `--as=${NOBODY}`], {
    kubeconfig: alice,
  });
  t.not(asNobody.code, 0, "alice could list pods herself: the member judged nobody");
  t.match(asNobody.stderr, /"system:serviceaccount:default:nobody" cannot list resource "pods"/);
  t.ok(
    auditLines.some(
      (l) =>
        l.user === "alice" &&
        l.impersonatedUser === READER &&
        l.resource === "pods" &&
        l.verb === "list" &&
        l.code === 200,
    ),
    "the audit line names both alice and the identity she acted as",
  );
  const refused = await member.kubectl(["get", "pods", `--as=${READER}`], { kubeconfig: carol });
  t.not(refused.code, 0);
  t.match(refused.stderr, /user "carol" may not impersonate/);
});

t.test("a caller that may impersonate users but not groups", async (t) => {
  const asUser = await member.kubectl(["auth", "can-i", "list", "pods", "--as=dave"], { kubeconfig: bob });
  t.equal(asUser.stdout.trim(), "no", "impersonating the user dave is allowed; dave may not list pods");
  const withGroup = await member.kubectl(["get", "pods", "--as=dave", "--as-group=system:masters"], {
    kubeconfig: bob,
  });
  t.not(withGroup.code, 0);
  t.match(withGroup.stderr, /user "bob" may not impersonate group "system:masters"/);
  t.notMatch(withGroup.stderr, /user "dave"/, "only what was refused is named");
});

t.test("exec --as: the upgrade is checked the same way", async (t) => {
  const asNobody = await member.kubectl(["exec", "box", `--as=${NOBODY}`, "--", "true"], {
    kubeconfig: alice,
  });
  t.not(asNobody.code, 0);
  t.match(
    asNobody.stderr,
    /cannot create resource "pods\/exec"|cannot get resource "pods"/,
    "the member judged nobody",
  );
  const refused = await member.kubectl(["exec", "box", `--as=${NOBODY}`, "--", "true"], {
    kubeconfig: carol,
  });
  t.not(refused.code, 0);
  t.match(refused.stderr, /user "carol" may not impersonate/);
  const plain = await member.kubectl(["exec", "box", "--", "true"], { kubeconfig: alice });
  t.equal(plain.code, 0, plain.stderr);
});

/** A raw GET with `headers` as given (name case and repeats kept) and alice's or bob's token. */
async function raw(
  token: string,
  headers: string[],
  path = "/api/v1/namespaces/default/pods",
): Promise<{ status: number; body: string }> {
  const url = new URL(`${tether.server.url}/clusters/m1${path}`);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        ca: tether.ca.certPem,
        // An array keeps each header's case and repeats as given; it gets no Host of its own.
        headers: ["Host", url.host, "Authorization", `Bearer ${token}`, ...headers],
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8").on("data", (d: string) => (body += d));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

async function tokenOf(kubeconfig: string): Promise<string> {
  const { readFile } = await import("node:fs/promises");
  return /token: (\S+)/.exec(await readFile(kubeconfig, "utf8"))![1]!;
}

t.test("names outside ASCII reach the member as themselves (UTF-8), not as latin1 or a 500", async (t) => {
  await tether.registerCluster("m-intl", "impersonate", { users: ["José", "用户"] });
  await tether.startAgent("m-intl", member);
  for (const user of ["José", "用户"]) {
    const who = await member.kubectl(["auth", "whoami", "-o", "json"], {
      kubeconfig: await tether.userKubeconfig("m-intl", user, ["équipe", "组"]),
    });
    t.equal(who.code, 0, who.stderr);
    const info = (JSON.parse(who.stdout) as { status: { userInfo: { username: string; groups: string[] } } })
      .status.userInfo;
    t.equal(info.username, `tether:${user}`);
    t.ok(info.groups.includes("tether:équipe") && info.groups.includes("tether:组"), info.groups.join("|"));
  }
});

t.test("hostile impersonation headers", async (t) => {
  const a = await tokenOf(alice);
  const b = await tokenOf(bob);
  const lower = await raw(a, ["impersonate-user", NOBODY]);
  t.equal(lower.status, 403, "a lower-case header is the same header");
  t.match(lower.body, /system:serviceaccount:default:nobody.*cannot list/, "the member judged nobody");
  const mixed = await raw(a, ["IMPERSONATE-USER", READER]);
  t.equal(mixed.status, 200, mixed.body);
  const twice = await raw(a, ["Impersonate-User", READER, "impersonate-user", "system:admin"]);
  t.equal(twice.status, 400, "two users is ambiguous");
  t.match(twice.body, /Impersonate-User once/);
  const groupOnly = await raw(a, ["Impersonate-Group", "system:masters"]);
  t.equal(groupOnly.status, 400, "a group without a user");
  t.match(groupOnly.body, /need an Impersonate-User/);
  const unknown = await raw(a, ["Impersonate-User", READER, "Impersonate-Whatever", "x"]);
  t.equal(unknown.status, 400);
  t.match(unknown.body, /unknown impersonation header/);
  const badKey = await raw(a, ["Impersonate-User", READER, "Impersonate-Extra-%zz", "x"]);
  t.equal(badKey.status, 400);
  const extra = await raw(b, ["Impersonate-User", "dave", "Impersonate-Extra-Scopes", "admin"]);
  t.equal(extra.status, 403, "bob may impersonate dave but not his extras");
  t.match(extra.body, /may not impersonate extra \\"scopes\\"=\\"admin\\"/);
  const groups = await raw(b, [
    "Impersonate-User",
    "dave",
    "Impersonate-Group",
    "a",
    "impersonate-group",
    "b",
  ]);
  t.equal(groups.status, 403);
  t.match(groups.body, /group \\"a\\", group \\"b\\"/, "each repeated group is checked on its own");
  const many = await raw(
    a,
    Array.from({ length: 40 }, (_, i) => ["Impersonate-Group", `g${i}`])
      .flat()
      .concat(["Impersonate-User", "x"]),
  );
  t.equal(many.status, 400, "the number of reviews one request costs is bounded");
});

t.test("passthrough: the member applies --as to the caller's own credential", async (t) => {
  await member.api(
    "POST",
    "/api/v1/namespaces/default/serviceaccounts",
    { metadata: { name: "pt-caller" } },
    [409],
  );
  await member.api(
    "POST",
    `/apis/${RBAC}/v1/namespaces/default/rolebindings`,
    {
      metadata: { name: "pt-caller-views" },
      roleRef: { apiGroup: RBAC, kind: "ClusterRole", name: "view" },
      subjects: [{ kind: "ServiceAccount", name: "pt-caller", namespace: "default" }],
    },
    [409],
  );
  const kubeconfig = await tether.rawKubeconfig("m1pass", await tokenFor(member, "default", "pt-caller"));
  const own = await member.kubectl(["get", "pods", "-n", "default", "-o", "name"], { kubeconfig });
  t.equal(own.code, 0, own.stderr);
  const as = await member.kubectl(["get", "pods", "-n", "default", `--as=${READER}`], { kubeconfig });
  t.not(as.code, 0, "the caller may not impersonate: the member says so, not Tether, and not as the agent");
  t.match(
    as.stderr,
    /"system:serviceaccount:default:pt-caller" cannot impersonate resource "serviceaccounts"/,
  );
});
