// The `serve` flags of the identity sources besides Tether tokens and
// certificates (docs/security-model.md "Identity sources"): host-cluster
// service accounts through TokenReview, and one OIDC issuer in the vocabulary
// of kube-apiserver's --oidc-* flags.
import { readFile } from "node:fs/promises";
import { TetherError } from "@tether/common";
import { type Command, Option } from "commander";
import type { IdentitySources } from "../proxy/identity/identity-sources.js";
import { KubeApi } from "../store/kube-api.js";
import type { StoreOptions } from "./store-options.js";

export interface IdentityFlags {
  hostServiceAccounts?: boolean;
  hostKubeconfig?: string;
  oidcIssuerUrl?: string;
  oidcClientId?: string;
  oidcUsernameClaim: string;
  oidcGroupsClaim?: string;
  oidcUsernamePrefix?: string;
  oidcGroupsPrefix?: string;
  oidcCaFile?: string;
}

export function addIdentityOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option(
        "--host-service-accounts",
        "accept host-cluster service-account tokens, verified by TokenReview (needs create on tokenreviews)",
      ),
    )
    .addOption(
      new Option(
        "--host-kubeconfig <file>",
        "--host-service-accounts: the host cluster's kubeconfig (default: the kubernetes store's, else in-cluster)",
      ),
    )
    .addOption(new Option("--oidc-issuer-url <url>", "accept ID tokens of this OIDC issuer (https)"))
    .addOption(new Option("--oidc-client-id <id>", "the audience an OIDC ID token must carry"))
    .addOption(new Option("--oidc-username-claim <claim>", "the claim that is the username").default("sub"))
    .addOption(new Option("--oidc-groups-claim <claim>", "the claim that lists the groups (default: none)"))
    .addOption(
      new Option(
        "--oidc-username-prefix <prefix>",
        'prepended to usernames; default "<issuer>#" unless the claim is email; "-" for none',
      ),
    )
    .addOption(new Option("--oidc-groups-prefix <prefix>", "prepended to groups (default: none)"))
    .addOption(new Option("--oidc-ca-file <file>", "PEM CAs for the issuer's HTTPS (default: system roots)"));
}

/** The identity sources the flags ask for; a coded error for an incomplete or unusable setting. */
export async function identityFromOptions(opts: IdentityFlags & StoreOptions): Promise<IdentitySources> {
  const sources: IdentitySources = {};
  if (opts.hostKubeconfig && !opts.hostServiceAccounts) {
    throw new TetherError("ERR_TETHER_IDENTITY_CONFIG", "--host-kubeconfig needs --host-service-accounts");
  }
  if (opts.hostServiceAccounts) {
    const kubeconfig = opts.hostKubeconfig ?? (opts.store === "kubernetes" ? opts.kubeconfig : undefined);
    let api: KubeApi;
    try {
      api = new KubeApi({
        ...(kubeconfig ? { kubeconfig } : {}),
        ...(!opts.hostKubeconfig && opts.context ? { context: opts.context } : {}),
      });
    } catch (err) {
      if (!opts.hostKubeconfig) throw err;
      throw new TetherError(
        "ERR_TETHER_IDENTITY_CONFIG",
        `cannot use --host-kubeconfig ${opts.hostKubeconfig}: ${(err as Error).message.replace(/; pass --kubeconfig.*$/, "")}`,
      );
    }
    const { TokenReviewer } = await import("../proxy/identity/token-review.js");
    sources.serviceAccounts = new TokenReviewer({ api });
  }
  if (opts.oidcIssuerUrl || opts.oidcClientId) {
    if (!opts.oidcIssuerUrl || !opts.oidcClientId) {
      throw new TetherError(
        "ERR_TETHER_IDENTITY_CONFIG",
        "--oidc-issuer-url and --oidc-client-id go together",
      );
    }
    let caPem: string | undefined;
    if (opts.oidcCaFile) {
      caPem = await readFile(opts.oidcCaFile, "utf8").catch((err: Error) => {
        throw new TetherError("ERR_TETHER_IDENTITY_CONFIG", `cannot read --oidc-ca-file: ${err.message}`);
      });
    }
    // Loaded only when asked for, as serve loads the proxy: the admin commands start without them.
    const { OidcVerifier } = await import("../proxy/identity/oidc.js");
    try {
      sources.oidc = new OidcVerifier({
        issuerUrl: opts.oidcIssuerUrl,
        clientId: opts.oidcClientId,
        usernameClaim: opts.oidcUsernameClaim,
        ...(opts.oidcGroupsClaim ? { groupsClaim: opts.oidcGroupsClaim } : {}),
        ...(opts.oidcUsernamePrefix !== undefined ? { usernamePrefix: opts.oidcUsernamePrefix } : {}),
        ...(opts.oidcGroupsPrefix !== undefined ? { groupsPrefix: opts.oidcGroupsPrefix } : {}),
        ...(caPem ? { caPem } : {}),
      });
    } catch (err) {
      throw new TetherError("ERR_TETHER_IDENTITY_CONFIG", (err as Error).message);
    }
  }
  return sources;
}
