// Which identity the agent starts with: the saved one when it is still good
// for this cluster and server (a join token given as well is ignored: it was
// spent on the first start), else a join with the token, saved for next time.
// Nothing about the saved credentials is trusted blindly: unreadable
// contents, a key that doesn't match, an expired certificate, another
// cluster's name or another CA than the pinned one all mean "join again".
import { X509Certificate } from "node:crypto";
import { caHashOf } from "@tether/common";
import {
  type CredentialStore,
  type Credentials,
  CredentialsError,
  clusterOf,
  keyMatches,
} from "./credentials.js";
import type { EgressProxy } from "./egress-proxy.js";
import { type JoinOptions, join } from "./join.js";

export const ERR_NOT_JOINED = "ERR_TETHER_AGENT_NOT_JOINED";
export const ERR_IDENTITY_UNUSABLE = "ERR_TETHER_AGENT_IDENTITY_UNUSABLE";

export interface IdentityOptions {
  server: string;
  cluster?: string | undefined;
  token?: string | undefined;
  caHash?: string | undefined;
  proxy?: EgressProxy | undefined;
}

interface IdentityLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** Why saved credentials can't be used, or undefined when they can. */
export function unusable(
  saved: Credentials,
  want: { cluster?: string | undefined; caHash?: string | undefined },
  where: string,
  now = Date.now(),
): string | undefined {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(saved.certPem);
  } catch {
    return `the certificate in ${where} cannot be parsed`;
  }
  let savedCluster: string;
  try {
    savedCluster = clusterOf(saved.certPem);
  } catch {
    return `the certificate in ${where} names no Tether cluster`;
  }
  if (want.cluster && want.cluster !== savedCluster)
    return `${where} holds the identity of cluster "${savedCluster}", not "${want.cluster}"`;
  if (!keyMatches(saved.certPem, saved.keyPem)) return `the key in ${where} does not match its certificate`;
  if (Date.parse(cert.validTo) <= now) return `the certificate in ${where} expired at ${cert.validTo}`;
  if (want.caHash) {
    let savedHash: string | undefined;
    try {
      savedHash = caHashOf(saved.caPem);
    } catch {}
    if (savedHash !== want.caHash) return `the CA in ${where} is not the one --ca-hash pins`;
  }
  return undefined;
}

export async function startupIdentity(
  opts: IdentityOptions,
  store: CredentialStore,
  log: IdentityLog,
  joinWith: (o: JoinOptions) => Promise<Credentials> = join,
): Promise<Credentials> {
  let saved: Credentials | undefined;
  let why: string | undefined;
  try {
    saved = await store.load();
    why = saved && unusable(saved, opts, store.where);
  } catch (err) {
    if ((err as CredentialsError).code !== "ERR_TETHER_AGENT_STATE_CORRUPT") throw err;
    why = (err as Error).message;
  }
  if (saved && !why) {
    const cert = new X509Certificate(saved.certPem);
    log.info(
      { certificate: cert.subject, notAfter: cert.validTo, from: store.where },
      "using the saved identity",
    );
    return saved;
  }
  const { cluster, token, caHash } = opts;
  if (!cluster || !token || !caHash) {
    throw why
      ? new CredentialsError(
          ERR_IDENTITY_UNUSABLE,
          `${why}: run "tether-server join-token ${cluster ?? "NAME"}" on the host and start the agent with ` +
            "--cluster, the new --token and --ca-hash (or TETHER_CLUSTER, TETHER_JOIN_TOKEN, TETHER_CA_HASH)",
        )
      : new CredentialsError(
          ERR_NOT_JOINED,
          `not joined yet (nothing in ${store.where}): pass --cluster, --token and --ca-hash as printed by ` +
            `"tether-server cluster add" (or TETHER_CLUSTER, TETHER_JOIN_TOKEN, TETHER_CA_HASH), ` +
            "or --ca-file, --cert-file and --key-file",
        );
  }
  if (why) log.warn({ reason: why }, "the saved identity is unusable; joining again with the join token");
  // The token works once: make sure the result can be kept before spending it.
  await store.checkWritable();
  let joined: Credentials;
  try {
    joined = await joinWith({ server: opts.server, cluster, token, caHash, proxy: opts.proxy });
  } catch (err) {
    // Two agent replicas start with one single-use token: the one that lost the race takes what
    // the winner saved in the store they share.
    const peer = await store.load().catch(() => undefined);
    if (peer && !unusable(peer, opts, store.where)) {
      log.info(
        { from: store.where },
        "the join failed, but another replica of this agent joined: using its identity",
      );
      return peer;
    }
    throw err;
  }
  await store.save(joined);
  log.info({ cluster, savedIn: store.where }, "joined");
  return joined;
}
