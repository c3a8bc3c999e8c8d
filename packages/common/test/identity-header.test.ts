// Identity header values for exposed services: any user or group name fits a
// header and comes back with decodeURIComponent; plain ASCII names stay as
// they are.
import t from "tap";
import { identityHeaderValue, isExposedServiceName } from "../src/contract.js";

t.test("identityHeaderValue", async (t) => {
  for (const name of ["alice", "alice@example.com", "ops team", "Zoë", "用户", "50%", "a,b;c", "tab\there"]) {
    const value = identityHeaderValue(name);
    t.match(value, /^[\x20-\x7e]*$/, `${name}: printable ASCII only`);
    t.equal(decodeURIComponent(value), name, `${name}: decodes back`);
  }
  t.equal(identityHeaderValue("alice@example.com"), "alice@example.com", "ASCII stays as is");
  t.equal(identityHeaderValue("50%"), "50%25");
  for (const name of ["x, admins", "a;b", " lead", "trail ", "  ", "in side"]) {
    const value = identityHeaderValue(name);
    t.notMatch(value, /[,;]|^ | $/, `${JSON.stringify(name)}: no comma, semicolon or edge space`);
    t.equal(decodeURIComponent(value), name, `${JSON.stringify(name)}: decodes back`);
  }
  t.equal(identityHeaderValue("x, admins"), "x%2C admins", "inner spaces stay");
  t.equal(identityHeaderValue("a\uD800b"), "a%EF%BF%BDb", "a lone surrogate does not throw");
});

t.test("isExposedServiceName", async (t) => {
  for (const ok of ["web", "ks-apiserver", "a", "a".repeat(55)]) t.ok(isExposedServiceName(ok), ok);
  for (const bad of ["", "Web", "-a", "a-", "a.b", "a/b", "a".repeat(56), ".."])
    t.notOk(isExposedServiceName(bad), bad);
});
