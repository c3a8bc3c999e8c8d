// requestedIdentity and impersonationChecks: the caller's Impersonate-*
// header lines read as the apiserver reads them (any case, repeats apart,
// extra keys lower-cased and percent-decoded), anything ambiguous refused,
// and the review each attribute needs. The reviews themselves run against a
// real member in test/e2e/impersonation.test.ts.
import t from "tap";
import {
  impersonationChecks,
  MAX_IMPERSONATION_HEADERS,
  requestedHeaders,
  requestedIdentity,
} from "../../src/proxy/impersonation.js";

t.test("none asked for", async (t) => {
  t.same(requestedIdentity(["Accept", "application/json", "Authorization", "Bearer x"]), {});
});

t.test("user, groups, uid and extras, in any case, repeats kept apart", async (t) => {
  const asked = requestedIdentity([
    "impersonate-user",
    "dave",
    "IMPERSONATE-GROUP",
    "a, b",
    "Impersonate-Group",
    "c",
    "Impersonate-Uid",
    "42",
    "Impersonate-Extra-Scopes",
    "x",
    "impersonate-extra-scopes",
    "y",
    "Impersonate-Extra-Example.com%2FTeam",
    "z",
  ]);
  t.same(asked, {
    identity: {
      user: "dave",
      groups: ["a, b", "c"],
      uid: "42",
      extra: { scopes: ["x", "y"], "example.com/team": ["z"] },
    },
  });
  if (!("identity" in asked) || !asked.identity) throw new Error("no identity");
  t.same(requestedHeaders(asked.identity), [
    ["Impersonate-User", "dave"],
    ["Impersonate-Group", "a, b"],
    ["Impersonate-Group", "c"],
    ["Impersonate-Uid", "42"],
    ["Impersonate-Extra-scopes", "x"],
    ["Impersonate-Extra-scopes", "y"],
    ["Impersonate-Extra-example.com%2Fteam", "z"],
  ]);
});

t.test("an extra key named __proto__ stays a key", async (t) => {
  const asked = requestedIdentity(["Impersonate-User", "u", "Impersonate-Extra-__proto__", "v"]);
  if (!("identity" in asked) || !asked.identity) throw new Error("no identity");
  t.same(Object.entries(asked.identity.extra), [["__proto__", ["v"]]]);
  t.equal(({} as Record<string, unknown>).v, undefined, "no prototype was touched");
});

t.test("ambiguous or malformed headers are refused", async (t) => {
  for (const [raw, message] of [
    [["Impersonate-User", "a", "impersonate-user", "b"], /Impersonate-User once/],
    [["Impersonate-Group", "g"], /need an Impersonate-User/],
    [["Impersonate-Uid", "1"], /need an Impersonate-User/],
    [["Impersonate-Extra-k", "v"], /need an Impersonate-User/],
    [
      ["Impersonate-User", "a", "Impersonate-Uid", "1", "Impersonate-Uid", "2"],
      /Impersonate-Uid at most once/,
    ],
    [["Impersonate-User", ""], /empty/],
    [["Impersonate-User", "a", "Impersonate-Groups", "g"], /unknown impersonation header/],
    [["Impersonate-User", "a", "Impersonate-Extra-", "v"], /unknown impersonation header/],
    [["Impersonate-User", "a", "Impersonate-Extra-%E0%A4%A", "v"], /not valid percent-encoding/],
    [
      [
        "Impersonate-User",
        "a",
        ...Array.from({ length: MAX_IMPERSONATION_HEADERS }, () => ["Impersonate-Group", "g"]).flat(),
      ],
      /at most 32/,
    ],
  ] as const) {
    const asked = requestedIdentity([...raw]);
    t.ok("error" in asked, raw.slice(0, 4).join(" "));
    if ("error" in asked) t.match(asked.error, message);
  }
});

t.test(
  "the reviews: service accounts by namespace and name, uids and extras in authentication.k8s.io",
  async (t) => {
    const checks = impersonationChecks({
      user: "system:serviceaccount:ns1:robot",
      groups: ["devs"],
      uid: "7",
      extra: { scopes: ["a"] },
    });
    t.same(
      checks.map((c) => c.attributes),
      [
        { verb: "impersonate", group: "", resource: "serviceaccounts", namespace: "ns1", name: "robot" },
        { verb: "impersonate", group: "", resource: "groups", name: "devs" },
        { verb: "impersonate", group: "authentication.k8s.io", resource: "uids", name: "7" },
        {
          verb: "impersonate",
          group: "authentication.k8s.io",
          resource: "userextras",
          subresource: "scopes",
          name: "a",
        },
      ],
    );
    t.same(
      impersonationChecks({ user: "alice", groups: [], extra: {} }).map((c) => c.attributes),
      [{ verb: "impersonate", group: "", resource: "users", name: "alice" }],
    );
  },
);
