// Issue 16: OIDC ID tokens as Tether identities, against an issuer served over
// HTTPS here (oidc-issuer.ts: discovery + JWKS, keys rotated by the test) and
// a real member apiserver behind an agent. Valid tokens reach the member under
// the apiserver-style prefixes (then tether:); wrong audience, expired, bad
// signature, unknown key, a key rotated out and would-be system: identities
// are 401; rotation to a new key works without a restart; an unknown kid makes
// Tether refetch the JWKS at most once per cooldown; an unreachable issuer is
// a 503.
import { OidcVerifier } from "@tether/server";
import { createServer as createTlsServer } from "node:tls";
import type { AddressInfo } from "node:net";
import { SignJWT } from "jose";
import t from "tap";
import { startClusters } from "../kube/index.js";
import { createClusterPki } from "../kube/pki.js";
import { type Fixture, startTether, until } from "./fixture.js";
import { TestIssuer } from "./oidc-issuer.js";
import { heldRequest, rawRequest } from "./raw-client.js";

const CLIENT = "tether";
const set = await startClusters(1);
t.teardown(() => set.stop());
const member = set.clusters[0]!;
const issuer = await TestIssuer.start();
t.teardown(() => issuer.close());
await issuer.addKey("k1");
await issuer.addKey("evil");
issuer.publish("k1");

const verifier = (options: {
  cooldownMs?: number;
  fetchTimeoutMs?: number;
  usernameClaim?: string;
  usernamePrefix?: string;
  groupsPrefix?: string;
  url?: string;
  caPem?: string;
}) =>
  new OidcVerifier({
    issuerUrl: options.url ?? issuer.url,
    clientId: CLIENT,
    groupsClaim: "groups",
    groupsPrefix: options.groupsPrefix ?? "oidc:",
    caPem: options.caPem ?? issuer.caPem,
    ...(options.cooldownMs !== undefined ? { jwksCooldownMs: options.cooldownMs } : {}),
    ...(options.fetchTimeoutMs !== undefined ? { fetchTimeoutMs: options.fetchTimeoutMs } : {}),
    ...(options.usernamePrefix !== undefined ? { usernamePrefix: options.usernamePrefix } : {}),
    ...(options.usernameClaim ? { usernameClaim: options.usernameClaim } : {}),
  });

async function tetherWith(oidc: OidcVerifier): Promise<Fixture> {
  const tether = await startTether({ identity: { oidc } });
  t.teardown(() => tether.stop());
  await tether.registerCluster("m", "impersonate", { users: [`${issuer.url}#alice`], groups: ["oidc:devs"] });
  await tether.startAgent("m", member);
  return tether;
}

// Cooldown 0: every unknown kid may refetch (rotation without waiting).
const tether = await tetherWith(verifier({ cooldownMs: 0 }));
const status = async (token: string, on: Fixture = tether) =>
  (
    await rawRequest({ url: on.server.url, caPem: on.ca.certPem }, "/clusters/m/version", {
      headers: { authorization: `Bearer ${token}` },
    })
  ).status;

t.test("a valid ID token reaches the member as tether:<issuer>#<sub>, groups oidc:-prefixed", async (t) => {
  const token = await issuer.token("k1", { sub: "alice", aud: CLIENT, groups: ["devs", "ops"] });
  const who = await member.kubectl(["auth", "whoami", "-o", "json"], {
    kubeconfig: await tether.rawKubeconfig("m", token),
  });
  t.equal(who.code, 0, who.stderr);
  const info = (JSON.parse(who.stdout) as { status: { userInfo: { username: string; groups: string[] } } })
    .status.userInfo;
  t.equal(info.username, `tether:${issuer.url}#alice`);
  t.ok(
    info.groups.includes("tether:oidc:devs") && info.groups.includes("tether:oidc:ops"),
    info.groups.join(),
  );
  // Allowed by group alone, with an audience list that holds the client id.
  t.equal(
    await status(await issuer.token("k1", { sub: "bob", aud: ["other", CLIENT], groups: ["devs"] })),
    200,
  );
  // Neither the user nor a group is listed: Forbidden, not Unauthorized.
  t.equal(await status(await issuer.token("k1", { sub: "carol", aud: CLIENT })), 403);
});

t.test("a watch opened with a short-lived ID token ends at its exp; then 401 says it expired", async (t) => {
  await member.api(
    "POST",
    "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    {
      metadata: { name: "tether-oidc-devs-view" },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "view" },
      subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "Group", name: "tether:oidc:devs" }],
    },
    [409],
  );
  const exp = Math.floor(Date.now() / 1000) + 6;
  const token = await issuer.token("k1", { sub: "alice", aud: CLIENT, groups: ["devs"], exp });
  const target = { url: tether.server.url, caPem: tether.ca.certPem };
  const watch = await heldRequest(
    target,
    "/clusters/m/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=120",
    token,
  );
  t.teardown(() => watch.close());
  t.equal(watch.status, 200);
  let closedAt = 0;
  void watch.body.then(() => {
    closedAt = Date.now();
  });
  await until("the watch ends", () => closedAt > 0, 20_000);
  t.ok(closedAt >= exp * 1000 - 50, `ended at exp (${closedAt - exp * 1000} ms after it), not before`);
  const after = await rawRequest(target, "/clusters/m/version", {
    headers: { authorization: `Bearer ${token}` },
  });
  t.equal(after.status, 401);
  t.match((JSON.parse(after.body) as { message: string }).message, /expired at .*exec credential plugin/);
});

t.test("wrong audience, expired, not yet valid, no exp, bad signature, unknown key: 401", async (t) => {
  const now = Math.floor(Date.now() / 1000);
  const alice = { sub: "alice", aud: CLIENT };
  t.equal(await status(await issuer.token("k1", { ...alice, aud: "someone-else" })), 401, "wrong audience");
  t.equal(
    await status(await issuer.token("k1", { ...alice, iat: now - 7200, exp: now - 3600 })),
    401,
    "expired",
  );
  t.equal(await status(await issuer.token("k1", { ...alice, nbf: now + 3600 })), 401, "not yet valid");
  t.equal(await status(await issuer.token("k1", { ...alice, exp: undefined })), 401, "no exp");
  t.equal(await status(await issuer.token("k1", alice, "evil")), 401, "k1's kid, signed by another key");
  t.equal(await status(await issuer.token("evil", alice)), 401, "a kid the issuer does not publish");
  // alg none, and HS256 keyed with the issuer's public key (algorithm confusion): never accepted.
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const payload = { ...alice, iss: issuer.url, exp: now + 3600 };
  t.equal(await status(`${b64({ alg: "none", kid: "k1" })}.${b64(payload)}.`), 401, "alg none");
  const publicJwk = JSON.stringify((await issuer.jwksBody()).keys[0]);
  const hs = await new SignJWT(payload)
    .setProtectedHeader({ alg: "HS256", kid: "k1" })
    .sign(new TextEncoder().encode(publicJwk));
  t.equal(await status(hs), 401, "HS256 with the public key as secret");
  const forgedIss = await issuer.token("k1", { ...alice, iss: "https://elsewhere.example" });
  t.equal(await status(forgedIss), 401, "another issuer (not configured: no source takes it)");
});

t.test("the issuer rotates k1 out for k2: k2 tokens work at once, k1 tokens no longer", async (t) => {
  const k1 = await issuer.token("k1", { sub: "alice", aud: CLIENT });
  t.equal(await status(k1), 200);
  await issuer.addKey("k2");
  issuer.publish("k2");
  t.equal(await status(await issuer.token("k2", { sub: "alice", aud: CLIENT })), 200, "new key");
  t.equal(await status(k1), 401, "rotated-out key");
});

t.test("an unknown kid refetches the JWKS at most once per cooldown", async (t) => {
  issuer.publish("k1");
  const slow = await tetherWith(verifier({ cooldownMs: 3600_000 }));
  t.equal(await status(await issuer.token("k1", { sub: "alice", aud: CLIENT }), slow), 200);
  const fetched = issuer.jwksFetches;
  for (let i = 0; i < 20; i++) {
    t.equal(
      await status(await issuer.token(`unknown-${i}`, { sub: "alice", aud: CLIENT }, "evil"), slow),
      401,
    );
  }
  t.equal(issuer.jwksFetches, fetched, "no refetch within the cooldown");
});

t.test(
  "an identity that would be system:… is refused; prefixes make that impossible by default",
  async (t) => {
    const bare = await tetherWith(verifier({ cooldownMs: 0, usernamePrefix: "-", groupsPrefix: "-" }));
    t.equal(await status(await issuer.token("k1", { sub: "system:admin", aud: CLIENT }), bare), 401);
    t.equal(
      await status(await issuer.token("k1", { sub: "x", aud: CLIENT, groups: ["system:masters"] }), bare),
      401,
    );
    // With the default prefixes the same claims are harmless names: authenticated, just not allowed here.
    const prefixed = await issuer.token("k1", {
      sub: "system:admin",
      aud: CLIENT,
      groups: ["system:masters"],
    });
    t.equal(await status(prefixed), 403);
  },
);

t.test("--oidc-username-claim email: no default prefix, and an unverified email is refused", async (t) => {
  const byEmail = await tetherWith(verifier({ cooldownMs: 0, usernameClaim: "email" }));
  await byEmail.registerCluster("e", "impersonate", { users: ["alice@example.com"] });
  await byEmail.startAgent("e", member);
  const get = async (claims: Record<string, unknown>) =>
    (
      await rawRequest({ url: byEmail.server.url, caPem: byEmail.ca.certPem }, "/clusters/e/version", {
        headers: {
          authorization: `Bearer ${await issuer.token("k1", { sub: "1", aud: CLIENT, ...claims })}`,
        },
      })
    ).status;
  t.equal(await get({ email: "alice@example.com", email_verified: true }), 200);
  t.equal(await get({ email: "alice@example.com", email_verified: false }), 401);
  for (const email_verified of ["false", 0, "true", 1, null])
    t.equal(await get({ email: "alice@example.com", email_verified }), 401, JSON.stringify(email_verified));
  t.equal(await get({}), 401, "no email claim");
});

t.test("a JWKS that fails to load is a 503 while it fails, then tokens work again", async (t) => {
  issuer.publish("k1");
  const fresh = await tetherWith(verifier({ cooldownMs: 0 }));
  const token = await issuer.token("k1", { sub: "alice", aud: CLIENT });
  issuer.jwksDown = true;
  t.teardown(() => {
    issuer.jwksDown = false;
  });
  t.equal(await status(token, fresh), 503);
  issuer.jwksDown = false;
  t.equal(await status(token, fresh), 200);
});

t.test("an issuer that cannot be reached is a 503, not a 401", async (t) => {
  const url = "https://127.0.0.1:9";
  const down = await tetherWith(verifier({ cooldownMs: 0, url }));
  const now = Math.floor(Date.now() / 1000);
  // A JWT naming that issuer (its signature is never reached).
  const claims = Buffer.from(JSON.stringify({ iss: url, sub: "alice", aud: CLIENT, exp: now + 60 })).toString(
    "base64url",
  );
  const token = `${Buffer.from('{"alg":"ES256","kid":"k1"}').toString("base64url")}.${claims}.AAAA`;
  const res = await rawRequest({ url: down.server.url, caPem: down.ca.certPem }, "/clusters/m/version", {
    headers: { authorization: `Bearer ${token}` },
  });
  t.equal(res.status, 503, res.body);
  t.match((JSON.parse(res.body) as { message: string }).message, /OIDC issuer/);
});

t.test("with the default cooldown, a key rotated in is accepted within seconds", async (t) => {
  issuer.publish("k1");
  const rotating = await tetherWith(verifier({}));
  t.equal(await status(await issuer.token("k1", { sub: "alice", aud: CLIENT }), rotating), 200);
  await issuer.addKey("k3");
  issuer.publish("k1", "k3");
  const k3 = await issuer.token("k3", { sub: "alice", aud: CLIENT });
  // Within the cooldown of the first fetch the new kid may be refused; after it (5 s), never.
  const took = await until(
    "a k3 token is accepted",
    // One try a second: a 100 ms poll of 401s would meet the failed-authentication rate limit.
    async () => (await status(k3, rotating)) === 200 || !(await new Promise((r) => setTimeout(r, 1_000))),
    15_000,
  );
  t.comment(`k3 accepted ${took} ms after it was published`);
  issuer.publish("k1");
});

t.test(
  "an issuer that drips its discovery or JWKS a byte at a time is a 503 at the deadline, not a hang",
  async (t) => {
    const pki = await createClusterPki("drip", "none");
    let dripJwks = false;
    const drips = new Set<NodeJS.Timeout>();
    const server = createTlsServer({ cert: pki.apiserver.certPem, key: pki.apiserver.keyPem }, (socket) => {
      socket.on("error", () => {});
      socket.once("data", (chunk) => {
        const path = /^GET (\S+)/.exec(chunk.toString("latin1"))?.[1];
        if (path === "/.well-known/openid-configuration" && dripJwks) {
          const body = JSON.stringify({ issuer: url, jwks_uri: `${url}/jwks` });
          socket.end(
            `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`,
          );
          return;
        }
        socket.write("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n");
        const timer = setInterval(() => socket.write(" "), 100);
        drips.add(timer);
        socket.on("close", () => {
          clearInterval(timer);
          drips.delete(timer);
        });
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
    t.teardown(() => {
      for (const timer of drips) clearInterval(timer);
      return new Promise<void>((r) => server.close(() => r()));
    });
    const now = Math.floor(Date.now() / 1000);
    const claims = Buffer.from(
      JSON.stringify({ iss: url, sub: "alice", aud: CLIENT, exp: now + 600 }),
    ).toString("base64url");
    const token = `${Buffer.from('{"alg":"ES256","kid":"k1"}').toString("base64url")}.${claims}.AAAA`;
    for (const stage of ["discovery", "JWKS"]) {
      dripJwks = stage === "JWKS";
      const dripping = await tetherWith(verifier({ url, caPem: pki.ca.certPem, fetchTimeoutMs: 1_000 }));
      const res = await rawRequest(
        { url: dripping.server.url, caPem: dripping.ca.certPem },
        "/clusters/m/version",
        {
          headers: { authorization: `Bearer ${token}` },
        },
      );
      t.equal(res.status, 503, `${stage}: ${res.body}`);
      t.match((JSON.parse(res.body) as { message: string }).message, /OIDC issuer|JWKS/, stage);
    }
    await until("every dripping request is destroyed", () => drips.size === 0, 5_000);
  },
);
