// The admin credential: what lets the admin CLI drive a running tether-server
// from another machine (`--credential FILE`). `serve` creates it on first
// start and keeps it in the store (FileStore: admin-credential.json, 0600):
// the server's URL, Tether's CA certificate (so the CLI verifies the server
// without a system trust store) and a bearer token of kind "admin". It is the
// root of trust of the admin plane, like kubeadm's admin.conf: whoever holds
// it can add clusters and issue user tokens. Only the token's hash is a token
// record; the token expires after a year and `serve` (at start and hourly)
// issues a new one when less than a third of that is left, or when the
// credential is lost or unusable. A renewed token leaves the one it replaces
// valid until that one's own expiry, so copies admins hold keep working as
// long as they say; `rotate-admin-credential` instead revokes every earlier
// admin token at once, for a credential that leaked.
import { readFile, stat } from "node:fs/promises";
import type { Logger } from "../logger.js";
import { hashToken, issueToken, looksLikeToken } from "../pki/tokens.js";
import type { Store } from "../store/state-store.js";
import { fail, normalizeServerUrl, TetherCliError } from "./admin-input.js";

export const ADMIN_TOKEN_TTL_MS = 365 * 24 * 3600_000;
const RENEWAL_CHECK_MS = 3600_000;
export const ERR_TETHER_CREDENTIAL = "ERR_TETHER_CREDENTIAL";
const KIND = "TetherAdminCredential";

export interface AdminCredential {
  apiVersion: "tether.io/v1";
  kind: typeof KIND;
  /** https URL of tether-server. */
  server: string;
  /** PEM of the CA that signs tether-server's serving certificate. */
  caCertificate: string;
  token: string;
  expiresAt: string;
}

/** Parses a credential document; a coded one-line error names `from` otherwise. */
export function parseAdminCredential(text: string, from: string): AdminCredential {
  let doc: Partial<AdminCredential>;
  try {
    doc = JSON.parse(text) as Partial<AdminCredential>;
  } catch {
    return fail(ERR_TETHER_CREDENTIAL, `${from} is not a Tether admin credential (not JSON)`);
  }
  if (
    doc?.kind !== KIND ||
    typeof doc.server !== "string" ||
    typeof doc.caCertificate !== "string" ||
    !doc.caCertificate.includes("BEGIN CERTIFICATE") ||
    !looksLikeToken(doc.token) ||
    typeof doc.expiresAt !== "string"
  ) {
    return fail(
      ERR_TETHER_CREDENTIAL,
      `${from} is not a Tether admin credential (needs kind ${KIND}, server, caCertificate, token, expiresAt)`,
    );
  }
  return { ...doc, server: normalizeServerUrl(doc.server, from) } as AdminCredential;
}

/**
 * Reads a credential file for the CLI. Refuses a file that group or others
 * may read, as ssh does with private keys: the token in it is an admin's.
 */
export async function readAdminCredentialFile(path: string): Promise<AdminCredential> {
  let text: string;
  try {
    const st = await stat(path);
    if ((st.mode & 0o077) !== 0) {
      fail(
        ERR_TETHER_CREDENTIAL,
        `${path} may be read by other users (mode ${(st.mode & 0o777).toString(8)}): run "chmod 600 ${path}"`,
      );
    }
    text = await readFile(path, "utf8");
  } catch (err) {
    if (err instanceof TetherCliError) throw err;
    return fail(ERR_TETHER_CREDENTIAL, `cannot read the admin credential ${path}: ${(err as Error).message}`);
  }
  return parseAdminCredential(text, path);
}

/**
 * Makes sure the store holds a usable admin credential for `server` and
 * returns it: creates one on first start; issues a new token when the stored
 * one is malformed, its token is gone or expires within a third of its
 * lifetime; rewrites the document (same token) when the URL or CA changed.
 */
export async function ensureAdminCredential(
  store: Store,
  server: string,
  caPem: string,
  log?: Logger,
): Promise<AdminCredential> {
  const existingText = await store.adminCredential();
  const existing = existingText === undefined ? undefined : safeParse(existingText);
  let keep: AdminCredential | undefined;
  if (existing) {
    const record = await store.findToken(hashToken(existing.token));
    const fresh =
      record?.kind === "admin" && Date.parse(record.expiresAt) - Date.now() >= ADMIN_TOKEN_TTL_MS / 3;
    if (fresh && existing.server === server && existing.caCertificate === caPem) return existing;
    if (fresh) keep = existing;
  }
  let newHash: string | undefined;
  let token = keep?.token;
  let expiresAt = keep?.expiresAt;
  if (!token || !expiresAt) {
    const issued = await issueAdminToken(store);
    ({ token, expiresAt } = issued);
    newHash = issued.hash;
  }
  const credential = document(server, caPem, token, expiresAt);
  const text = serialize(credential);
  const stored = await store.saveAdminCredential(text, existingText);
  if (stored !== text) {
    // Another server process won the race: its credential stands, ours never existed.
    if (newHash) await store.deleteToken(newHash);
    return parseAdminCredential(stored, store.describe());
  }
  log?.info(
    { expiresAt, where: store.describe(), newToken: newHash !== undefined },
    "admin credential written",
  );
  return credential;
}

/**
 * ensureAdminCredential now and then hourly, so that a server running for
 * months renews the credential itself, as it does its serving certificate.
 * Returns a function that stops the checks once the one under way is done.
 */
export async function maintainAdminCredential(
  store: Store,
  server: string,
  caPem: string,
  log: Logger,
  intervalMs = RENEWAL_CHECK_MS,
): Promise<() => Promise<void>> {
  await ensureAdminCredential(store, server, caPem, log);
  let running: Promise<void> | undefined;
  const timer = setInterval(() => {
    running ??= ensureAdminCredential(store, server, caPem, log)
      .then(
        () => {},
        (err: Error) => log.error({ err: err.message }, "admin credential renewal failed"),
      )
      .finally(() => {
        running = undefined;
      });
  }, intervalMs);
  timer.unref();
  return async () => {
    clearInterval(timer);
    await running;
  };
}

/**
 * Replaces the stored admin credential's token with a new one and revokes
 * every other admin token: the answer to a credential that leaked. Works on
 * the store (proving control of the state), never through the admin API.
 */
export async function rotateAdminCredential(store: Store): Promise<AdminCredential> {
  const existingText = await store.adminCredential();
  const existing = existingText === undefined ? undefined : safeParse(existingText);
  if (!existing) {
    return fail(
      ERR_TETHER_CREDENTIAL,
      `no usable admin credential in ${store.describe()}: start "tether-server serve" on it once, which writes one`,
    );
  }
  const issued = await issueAdminToken(store);
  const credential = document(existing.server, existing.caCertificate, issued.token, issued.expiresAt);
  const text = serialize(credential);
  if ((await store.saveAdminCredential(text, existingText)) !== text) {
    await store.deleteToken(issued.hash);
    return fail(
      ERR_TETHER_CREDENTIAL,
      "the admin credential changed while rotating it: run the command again",
    );
  }
  for (const record of await store.listTokens()) {
    if (record.kind === "admin" && record.hash !== issued.hash) await store.deleteToken(record.hash);
  }
  return credential;
}

async function issueAdminToken(store: Store): Promise<{ token: string; hash: string; expiresAt: string }> {
  const { token, hash } = issueToken();
  const expiresAt = new Date(Date.now() + ADMIN_TOKEN_TTL_MS).toISOString();
  await store.addToken({ hash, kind: "admin", expiresAt });
  return { token, hash, expiresAt };
}

function document(server: string, caPem: string, token: string, expiresAt: string): AdminCredential {
  return { apiVersion: "tether.io/v1", kind: KIND, server, caCertificate: caPem, token, expiresAt };
}

function serialize(credential: AdminCredential): string {
  return `${JSON.stringify(credential, null, 2)}\n`;
}

function safeParse(text: string): AdminCredential | undefined {
  try {
    return parseAdminCredential(text, "admin credential");
  } catch {
    return undefined;
  }
}
