// serve's identity flags: incomplete or unusable settings are coded errors
// before anything starts; complete ones build the sources.
import t from "tap";
import { identityFromOptions } from "../../src/cli/identity-options.js";
import { OidcVerifier } from "../../src/proxy/identity/oidc.js";

const base = { stateDir: "/nonexistent", oidcUsernameClaim: "sub" };

t.test("incomplete settings are ERR_TETHER_IDENTITY_CONFIG", async (t) => {
  const code = { code: "ERR_TETHER_IDENTITY_CONFIG" };
  await t.rejects(identityFromOptions({ ...base, oidcClientId: "tether" }), code);
  await t.rejects(identityFromOptions({ ...base, oidcIssuerUrl: "https://idp.example" }), code);
  await t.rejects(
    identityFromOptions({ ...base, oidcIssuerUrl: "http://idp.example", oidcClientId: "x" }),
    code,
  );
  await t.rejects(
    identityFromOptions({
      ...base,
      oidcIssuerUrl: "https://idp.example",
      oidcClientId: "x",
      oidcCaFile: "/nonexistent",
    }),
    code,
  );
  await t.rejects(identityFromOptions({ ...base, hostKubeconfig: "/some/file" }), code);
  await t.rejects(
    identityFromOptions({ ...base, hostServiceAccounts: true, hostKubeconfig: "/nonexistent" }),
    {
      code: "ERR_TETHER_IDENTITY_CONFIG",
      message: /cannot use --host-kubeconfig \/nonexistent: cannot load/,
    },
  );
});

t.test("no flags, no sources; OIDC flags, an OIDC verifier of that issuer", async (t) => {
  t.same(await identityFromOptions(base), {});
  const sources = await identityFromOptions({
    ...base,
    oidcIssuerUrl: "https://idp.example",
    oidcClientId: "x",
  });
  t.ok(sources.oidc instanceof OidcVerifier);
  t.equal(sources.oidc?.issuer, "https://idp.example");
  t.equal(sources.serviceAccounts, undefined);
});
