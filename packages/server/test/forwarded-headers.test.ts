import t from "tap";
import {
  impersonationHeaders,
  requestHead,
  rewriteHeaders,
  rewriteRawHeaders,
} from "../src/forwarded-headers.js";

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
  rewriteHeaders(headers, "impersonate", caller);
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
  rewriteHeaders(headers, "passthrough");
  t.same(headers, { authorization: "Bearer member", "impersonate-user": "someone" });
});

t.test("impersonate mode without a caller is a programming error, not a silent pass", async (t) => {
  t.throws(() => rewriteHeaders({}, "impersonate"));
  t.throws(() => rewriteRawHeaders([], "impersonate"));
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
  t.same(rewriteRawHeaders(raw, "impersonate", caller), [
    ["Host", "x"],
    ["Upgrade", "SPDY/3.1"],
    ["Impersonate-User", "tether:alice"],
    ["Impersonate-Group", "tether:devs"],
    ["Impersonate-Group", "tether:ops"],
  ]);
});

t.test("requestHead refuses anything that could split the request", async (t) => {
  t.equal(requestHead("POST", "/x?y=1", [["A", "b"]]), "POST /x?y=1 HTTP/1.1\r\nA: b\r\n\r\n");
  t.throws(() => requestHead("GET", "/x HTTP/1.1\r\nEvil: 1", []));
  t.throws(() => requestHead("GET", "/", [["A", "b\r\nImpersonate-User: admin"]]));
  t.throws(() => requestHead("GET", "/", [["Bad Name", "v"]]));
  t.throws(() => requestHead("GE T", "/", []));
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
    rewriteHeaders(headers, mode, caller);
    t.notOk("connection" in headers || "x-hop" in headers || "keep-alive" in headers, mode);
    t.equal(headers.accept, "*/*");
  }
});
