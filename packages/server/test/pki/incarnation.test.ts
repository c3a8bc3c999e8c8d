// foreignIncarnation: a certificate belongs to the current registration of its name, or it does not.
import t from "tap";
import { foreignIncarnation, newIncarnation } from "../../src/pki/incarnation.js";
import { isIncarnation } from "../../src/pki/pki.js";
import type { ClusterRecord } from "../../src/store/state-store.js";

const record: ClusterRecord = {
  name: "m1",
  auth: "impersonate",
  labels: {},
  allowedUsers: [],
  allowedGroups: [],
  createdAt: "2026-06-01T12:00:00.000Z",
  uid: newIncarnation(),
};
const created = Date.parse(record.createdAt);

t.test("new incarnations are lowercase UUIDs, all different", async (t) => {
  const made = new Set(Array.from({ length: 100 }, newIncarnation));
  t.equal(made.size, 100);
  t.ok([...made].every(isIncarnation));
  t.notOk(isIncarnation(newIncarnation().toUpperCase()));
});

t.test("a certificate with an incarnation belongs exactly to that registration", async (t) => {
  const issuedAt = new Date(created + 60_000);
  t.equal(foreignIncarnation({ incarnation: record.uid, certIssuedAt: issuedAt }, record), undefined);
  t.match(
    foreignIncarnation({ incarnation: newIncarnation(), certIssuedAt: issuedAt }, record),
    /earlier registration of cluster "m1"/,
  );
  t.match(
    foreignIncarnation({ incarnation: newIncarnation(), certIssuedAt: new Date(created + 3600_000) }, record),
    /earlier registration/,
    "issued after the registration, but for another: still foreign",
  );
});

t.test("a certificate from before incarnations: accepted when issued after the registration", async (t) => {
  t.equal(foreignIncarnation({ certIssuedAt: new Date(created + 60_000) }, record), undefined, "later");
  t.equal(
    foreignIncarnation({ certIssuedAt: new Date(created - 500) }, record),
    undefined,
    "in the same second (X.509 keeps whole seconds)",
  );
  t.match(
    foreignIncarnation({ certIssuedAt: new Date(created - 60_000) }, record),
    /predates the registration of cluster "m1"/,
    "issued before this registration: an agent of an earlier one",
  );
});
