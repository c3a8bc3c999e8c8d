// mayUseCluster: a token reaches only its scope; a cluster's allowed users and groups narrow, never widen.
import t from "tap";
import type { IncomingMessage } from "node:http";
import {
  type AuthenticatedCaller,
  mayUseCluster,
  unauthenticatedMessage,
} from "../../src/proxy/authenticate.js";
import type { Store } from "../../src/store/state-store.js";
import type { ClusterRecord } from "../../src/store/state-store.js";

t.test("an expired OIDC or service-account token is told it expired and how to get a new one", async (t) => {
  const store = { findToken: async () => undefined } as unknown as Store;
  const jwt = (exp: number) =>
    `${Buffer.from('{"alg":"RS256"}').toString("base64url")}.${Buffer.from(JSON.stringify({ exp })).toString("base64url")}.sig`;
  const req = (token: string) => ({ headers: { authorization: `Bearer ${token}` } }) as IncomingMessage;
  const past = Math.floor(Date.now() / 1000) - 60;
  t.match(
    await unauthenticatedMessage(req(jwt(past)), store),
    new RegExp(`expired at ${new Date(past * 1000).toISOString()}.*exec credential plugin`),
  );
  t.match(
    await unauthenticatedMessage(req(jwt(past + 3600)), store),
    /could not authenticate you/,
    "not expired",
  );
  t.match(await unauthenticatedMessage(req("not.a.jwt"), store), /could not authenticate you/);
});

const cluster = (name: string, allowedUsers: string[] = [], allowedGroups: string[] = []): ClusterRecord => ({
  name,
  auth: "impersonate",
  labels: {},
  allowedUsers,
  allowedGroups,
  createdAt: "2026-01-01T00:00:00.000Z",
  uid: "3f1c2b7e-9a41-4c1e-8d2f-0b5e6a7c8d9e",
});
const token = (user: string, groups: string[], clusters: string[]): AuthenticatedCaller => ({
  user,
  groups,
  via: "token",
  clusters,
});
const certificate = (user: string, groups: string[]): AuthenticatedCaller => ({
  user,
  groups,
  via: "certificate",
});

t.test("a scoped token reaches only its scope, whatever other clusters allow", async (t) => {
  const alice = token("alice", ["devs"], ["m1"]);
  t.ok(mayUseCluster(alice, cluster("m1")), "its own cluster");
  t.notOk(mayUseCluster(alice, cluster("m2", [], ["devs"])), "m2 allows her group: still not hers");
  t.notOk(mayUseCluster(alice, cluster("m2", ["alice"])), "m2 allows her by name: still not hers");
  t.notOk(mayUseCluster(alice, cluster("m2")), "m2 allows nobody in particular");
  const everywhere = token("bob", ["devs"], ["*"]);
  t.ok(mayUseCluster(everywhere, cluster("m2")), `"*" reaches every cluster`);
});

t.test("allowed users and groups narrow a token's scope", async (t) => {
  const ops = cluster("m1", ["carol"], ["ops"]);
  t.notOk(
    mayUseCluster(token("alice", ["devs"], ["m1"]), ops),
    "in scope, but neither listed nor in a group",
  );
  t.ok(mayUseCluster(token("alice", ["devs", "ops"], ["m1"]), ops), "in scope and in an allowed group");
  t.ok(mayUseCluster(token("carol", [], ["m1"]), ops), "in scope and listed by name");
  t.notOk(mayUseCluster(token("alice", ["devs"], ["*"]), ops), `"*" is narrowed too`);
  t.notOk(mayUseCluster(token("alice", ["ops"], []), ops), "an empty scope reaches nothing");
});

t.test("a user certificate has no scope: the allowed users and groups are what it reaches", async (t) => {
  t.ok(mayUseCluster(certificate("carol", ["admins"]), cluster("m1", [], ["admins"])));
  t.ok(mayUseCluster(certificate("carol", []), cluster("m1", ["carol"])));
  t.notOk(mayUseCluster(certificate("carol", ["devs"]), cluster("m1", [], ["admins"])));
  t.notOk(mayUseCluster(certificate("carol", []), cluster("m1")), "a cluster that lists nobody");
});

t.test("service accounts and OIDC users carry no scope: only a listing cluster admits them", async (t) => {
  for (const via of ["service-account", "oidc"] as const) {
    const caller: AuthenticatedCaller = {
      user: "system:serviceaccount:fed:c",
      groups: ["system:serviceaccounts:fed"],
      via,
    };
    t.notOk(mayUseCluster(caller, cluster("open")), `${via}: a cluster that lists nobody`);
    t.ok(mayUseCluster(caller, cluster("u", ["system:serviceaccount:fed:c"])), `${via}: listed user`);
    t.ok(mayUseCluster(caller, cluster("g", [], ["system:serviceaccounts:fed"])), `${via}: listed group`);
    t.notOk(mayUseCluster(caller, cluster("other", ["bob"], ["admins"])), `${via}: lists others`);
  }
});
