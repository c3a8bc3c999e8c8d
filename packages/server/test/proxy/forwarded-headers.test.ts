import t from "tap";
import {
  impersonationHeaders,
  rewriteHeaders,
  rewriteRawHeaders,
} from "../../src/proxy/forwarded-headers.js";

const caller = { user: "alice", groups: ["devs", "ops"] };

t.test("impersonate mode drops every client credential and names the caller, prefixed", async (t) => {
  const headers: Record<string, string | string[] | undefined> = {
    authorization: "Bearer client-token",
    "proxy-authorization": "Basic x",
    "impersonate-user": "system:admin",
    "impersonate-group": ["system:masters"],
    "impersonate-uid": "0",
    "impersonate-extra-scopes": "all",
    accept: "application/json",
  };
  rewriteHeaders(headers, "impersonate", caller, undefined);
  t.same(headers, {
    accept: "application/json",
    "impersonate-user": "tether:alice",
    "impersonate-group": ["tether:devs", "tether:ops"],
  });
});

t.test("a caller without groups sends no Impersonate-Group", async (t) => {
  t.same(impersonationHeaders({ user: "bob", groups: [] }), { "impersonate-user": "tether:bob" });
});

t.test("passthrough mode leaves the headers alone", async (t) => {
  const headers = { authorization: "Bearer member", "impersonate-user": "someone" };
  rewriteHeaders(headers, "passthrough", undefined, undefined);
  t.same(headers, { authorization: "Bearer member", "impersonate-user": "someone" });
});

t.test("impersonate mode without a caller is a programming error, not a silent pass", async (t) => {
  t.throws(() => rewriteHeaders({}, "impersonate", undefined, "10.0.0.1"));
  t.throws(() => rewriteRawHeaders([], "impersonate", undefined, "10.0.0.1"));
});

t.test("raw headers: case-insensitive removal, order kept, caller appended", async (t) => {
  const raw = [
    "Host",
    "x",
    "AUTHORIZATION",
    "Bearer a",
    "Upgrade",
    "SPDY/3.1",
    "iMpErSoNaTe-GrOuP",
    "system:masters",
  ];
  t.same(rewriteRawHeaders(raw, "impersonate", caller, undefined), [
    ["Host", "x"],
    ["Upgrade", "SPDY/3.1"],
    ["Impersonate-User", "tether:alice"],
    ["Impersonate-Group", "tether:devs"],
    ["Impersonate-Group", "tether:ops"],
  ]);
});

t.test("the caller's connection headers do not reach the tunnel stream", async (t) => {
  for (const mode of ["impersonate", "passthrough"] as const) {
    const headers: Record<string, string | string[] | undefined> = {
      connection: "close, x-hop",
      "x-hop": "1",
      "keep-alive": "timeout=5",
      accept: "*/*",
      authorization: "Bearer member",
    };
    rewriteHeaders(headers, mode, caller, undefined);
    t.notOk("connection" in headers || "x-hop" in headers || "keep-alive" in headers, mode);
    t.equal(headers.accept, "*/*");
  }
});

t.test("what the caller says about its origin is replaced by its real peer address", async (t) => {
  for (const mode of ["impersonate", "passthrough"] as const) {
    const headers: Record<string, string | string[] | undefined> = {
      "x-forwarded-for": "10.9.9.9",
      "x-forwarded-host": "evil",
      "x-forwarded-proto": "http",
      "x-forwarded-port": "1",
      forwarded: "for=10.9.9.9",
      "x-real-ip": "10.9.9.9",
      accept: "*/*",
    };
    rewriteHeaders(headers, mode, caller, "192.0.2.7");
    t.equal(headers["x-forwarded-for"], "192.0.2.7", mode);
    for (const name of [
      "x-forwarded-host",
      "x-forwarded-proto",
      "x-forwarded-port",
      "forwarded",
      "x-real-ip",
    ]) {
      t.notOk(name in headers, `${mode}: ${name} removed`);
    }
    const raw = rewriteRawHeaders(
      [
        "X-Forwarded-For",
        "10.9.9.9",
        "FORWARDED",
        "for=x",
        "X-Real-IP",
        "1.2.3.4",
        "X-Forwarded-Proto",
        "http",
      ],
      mode,
      caller,
      "192.0.2.7",
    );
    t.same(
      raw.filter(([n]) => !/^impersonate-/i.test(n)),
      [["X-Forwarded-For", "192.0.2.7"]],
      `${mode}: raw headers keep only Tether's X-Forwarded-For`,
    );
  }
});

t.test("impersonation on raw headers: one Impersonate-Group line per group", async (t) => {
  const three = { user: "carol", groups: ["a", "b, c", "d"] };
  const groups = rewriteRawHeaders([], "impersonate", three, undefined).filter(
    ([n]) => n === "Impersonate-Group",
  );
  t.same(groups, [
    ["Impersonate-Group", "tether:a"],
    ["Impersonate-Group", "tether:b, c"],
    ["Impersonate-Group", "tether:d"],
  ]);
});
