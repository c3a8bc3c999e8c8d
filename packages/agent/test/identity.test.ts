// Which identity the agent starts with, for every kind of saved state: a
// good one is used and the join token ignored; anything wrong with it joins
// again when a token is given and says what to do when not; and the token is
// never spent when the result couldn't be saved.

import { caHashOf } from "@tether/common";
import t from "tap";
import { type CredentialStore, type Credentials, CredentialsError } from "../src/credentials.js";
import { startupIdentity, unusable } from "../src/identity.js";
import type { JoinOptions } from "../src/join.js";
import { makeCert, type TestCert } from "./lib/certs.js";

const HOUR = 3600_000;

const ca = await makeCert({ cn: "tether-ca", ca: true });
const otherCa = await makeCert({ cn: "another-ca", ca: true });
const clusterCert = (name: string, o: { notAfter?: Date; issuer?: TestCert } = {}) =>
  makeCert({ cn: `cluster:${name}`, issuer: o.issuer ?? ca, ...o });
const asCreds = (c: TestCert, caPem = ca.certPem): Credentials => ({
  caPem,
  certPem: c.certPem,
  keyPem: c.keyPem,
});

const good = asCreds(await clusterCert("east"));
const fresh = asCreds(await clusterCert("east"));
const JOIN = {
  server: "https://tether.example",
  cluster: "east",
  token: "join-token",
  caHash: caHashOf(ca.certPem),
};

class MemoryStore implements CredentialStore {
  readonly where = "memory";
  calls: string[] = [];
  saved: Credentials | undefined;
  loadError: Error | undefined;
  writeError: Error | undefined;
  constructor(initial?: Credentials) {
    this.saved = initial;
  }
  async load() {
    this.calls.push("load");
    if (this.loadError) throw this.loadError;
    return this.saved;
  }
  async checkWritable() {
    this.calls.push("checkWritable");
    if (this.writeError) throw this.writeError;
  }
  async save(creds: Credentials) {
    this.calls.push("save");
    this.saved = creds;
  }
}

const log = {
  lines: [] as string[],
  info(o: object, m: string) {
    this.lines.push(`${m} ${JSON.stringify(o)}`);
  },
  warn(o: object, m: string) {
    this.lines.push(`${m} ${JSON.stringify(o)}`);
  },
};

function joiner() {
  const calls: JoinOptions[] = [];
  return {
    calls,
    join: async (o: JoinOptions) => {
      calls.push(o);
      return fresh;
    },
  };
}

t.test("usable saved credentials are used and the join token is ignored", async (t) => {
  const store = new MemoryStore(good);
  const j = joiner();
  t.equal(await startupIdentity(JOIN, store, log, j.join), good);
  t.equal(j.calls.length, 0, "the token (already spent) is not presented again");
  t.same(store.calls, ["load"], "nothing is written");
  const bare = await startupIdentity({ server: JOIN.server }, new MemoryStore(good), log, j.join);
  t.equal(bare, good, "no join flags are needed once joined");
});

t.test("nothing saved: checks that it can save, joins, saves", async (t) => {
  const store = new MemoryStore();
  const j = joiner();
  t.equal(await startupIdentity(JOIN, store, log, j.join), fresh);
  t.same(j.calls, [JOIN]);
  t.same(store.calls, ["load", "checkWritable", "save"]);
  t.equal(store.saved, fresh);
});

t.test("a store that cannot be written is found before the token is spent", async (t) => {
  const store = new MemoryStore();
  store.writeError = new CredentialsError("ERR_TETHER_AGENT_SECRET_FORBIDDEN", "may not create");
  const j = joiner();
  await t.rejects(startupIdentity(JOIN, store, log, j.join), { code: "ERR_TETHER_AGENT_SECRET_FORBIDDEN" });
  t.equal(j.calls.length, 0, "the one-time token is still unused");
});

t.test("errors reading the store other than bad contents stop the agent", async (t) => {
  const store = new MemoryStore();
  store.loadError = new CredentialsError("ERR_TETHER_AGENT_SECRET_FORBIDDEN", "may not get");
  const j = joiner();
  await t.rejects(startupIdentity(JOIN, store, log, j.join), { code: "ERR_TETHER_AGENT_SECRET_FORBIDDEN" });
  t.equal(j.calls.length, 0, "no join over a store it cannot read (it might hold a good identity)");
});

t.test("saved credentials that can't be used", async (t) => {
  const cases: [string, () => Promise<Credentials> | Credentials, RegExp][] = [
    ["another cluster's", async () => asCreds(await clusterCert("west")), /cluster "west", not "east"/],
    [
      "expired",
      async () => asCreds(await clusterCert("east", { notAfter: new Date(Date.now() - HOUR) })),
      /expired at/,
    ],
    [
      "a key that isn't the certificate's",
      () => ({ ...good, keyPem: fresh.keyPem }),
      /key .* does not match/,
    ],
    [
      "a CA other than the pinned one",
      () => ({ ...good, caPem: otherCa.certPem }),
      /not the one --ca-hash pins/,
    ],
    ["a certificate that doesn't parse", () => ({ ...good, certPem: "garbage" }), /cannot be parsed/],
    [
      "a certificate of no cluster",
      async () => asCreds(await makeCert({ cn: "alice", issuer: ca })),
      /names no Tether cluster/,
    ],
  ];
  for (const [what, make, reason] of cases) {
    await t.test(what, async (t) => {
      const saved = await make();
      t.match(unusable(saved, JOIN, "memory"), reason);

      const store = new MemoryStore(saved);
      const j = joiner();
      t.equal(await startupIdentity(JOIN, store, log, j.join), fresh, "with a join token: joins again");
      t.equal(store.saved, fresh, "and replaces the saved credentials");

      await t.rejects(
        startupIdentity({ ...JOIN, token: undefined }, new MemoryStore(saved), log, j.join),
        {
          code: "ERR_TETHER_AGENT_IDENTITY_UNUSABLE",
          message: reason,
        },
        "without one: says why and how to get a token",
      );
    });
  }

  await t.test("unreadable contents", async (t) => {
    const corrupt = () => {
      const s = new MemoryStore();
      s.loadError = new CredentialsError("ERR_TETHER_AGENT_STATE_CORRUPT", "memory lacks tls.key");
      return s;
    };
    const j = joiner();
    const store = corrupt();
    t.equal(await startupIdentity(JOIN, store, log, j.join), fresh, "with a join token: joins again");
    t.same(store.calls, ["load", "checkWritable", "save"]);
    await t.rejects(startupIdentity({ server: JOIN.server }, corrupt(), log, j.join), {
      code: "ERR_TETHER_AGENT_IDENTITY_UNUSABLE",
      message: /memory lacks tls.key: run "tether-server join-token NAME"/,
    });
  });
});

t.test("never joined and no join flags: says which to pass", async (t) => {
  await t.rejects(startupIdentity({ server: JOIN.server }, new MemoryStore(), log, joiner().join), {
    code: "ERR_TETHER_AGENT_NOT_JOINED",
    message: /nothing in memory.*--cluster, --token and --ca-hash.*TETHER_JOIN_TOKEN/,
  });
});

t.test("nothing secret is logged", async (t) => {
  await startupIdentity(JOIN, new MemoryStore(), log, joiner().join);
  await startupIdentity(JOIN, new MemoryStore({ ...good, caPem: otherCa.certPem }), log, joiner().join);
  const all = log.lines.join("\n");
  t.notMatch(all, /join-token/);
  t.notMatch(all, /PRIVATE KEY/);
});

t.test("a replica that loses the join race uses the identity the other one saved", async (t) => {
  const store = new MemoryStore();
  const spent = async () => {
    // The other replica joined with the same token in the meantime and saved its identity.
    store.saved = good;
    throw new Error("the join token has already been used");
  };
  t.equal(await startupIdentity(JOIN, store, log, spent), good);
  const alone = new MemoryStore();
  await t.rejects(
    startupIdentity(JOIN, alone, log, async () => {
      throw new Error("the join token has already been used");
    }),
    /already been used/,
    "with nothing saved by anyone the join's error stands",
  );
});
