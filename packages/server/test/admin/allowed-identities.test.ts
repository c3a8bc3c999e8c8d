// A cluster may allow host service accounts (system:serviceaccount:NS:NAME and
// their system:serviceaccounts[:NS] groups), the only system: names it may
// list; a Tether token can still never be issued for them.
import t from "tap";
import { checkIdentity, uniqueAllowed } from "../../src/admin/admin-input.js";

t.test("service-account names are allowed on clusters", async (t) => {
  t.same(uniqueAllowed("user", ["system:serviceaccount:fed:ctl", "alice", "system:serviceaccount:fed:ctl"]), [
    "system:serviceaccount:fed:ctl",
    "alice",
  ]);
  t.same(uniqueAllowed("group", ["system:serviceaccounts", "system:serviceaccounts:fed"]), [
    "system:serviceaccounts",
    "system:serviceaccounts:fed",
  ]);
});

t.test("every other system: name is still reserved, on clusters and tokens", async (t) => {
  const reserved = (kind: "user" | "group", name: string, code: string) =>
    t.throws(() => uniqueAllowed(kind, [name]), { code }, name);
  reserved("user", "system:admin", "ERR_TETHER_RESERVED_USER");
  reserved("user", "system:serviceaccount:fed", "ERR_TETHER_RESERVED_USER");
  reserved("user", "system:serviceaccount:Fed:ctl", "ERR_TETHER_RESERVED_USER");
  reserved("user", "system:serviceaccount:fed:ctl:extra", "ERR_TETHER_RESERVED_USER");
  reserved("group", "system:masters", "ERR_TETHER_RESERVED_GROUP");
  reserved("group", "system:authenticated", "ERR_TETHER_RESERVED_GROUP");
  reserved("group", "system:serviceaccounts:fed:x", "ERR_TETHER_RESERVED_GROUP");
  t.throws(() => checkIdentity("user", "system:serviceaccount:fed:ctl"), {
    code: "ERR_TETHER_RESERVED_USER",
  });
});
