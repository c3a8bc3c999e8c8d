// Validation of the records a store keeps: what is written is checked the
// same way whichever store writes it, and a record that fails is refused with
// ERR_TETHER_INVALID_RECORD before anything is written.
import { codedError, isAuthMode } from "@tether/common";
import { isIncarnation, isValidClusterName, validateClusterName } from "../pki/pki.js";
import { isTokenHash } from "../pki/tokens.js";
import { type ClusterInput, ERR_TETHER_INVALID_RECORD, type TokenRecord } from "./state-store.js";

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((s) => typeof s === "string");
}

export function invalid(message: string): Error {
  return codedError(ERR_TETHER_INVALID_RECORD, message);
}

export function checkIsoDate(what: string, v: unknown): string {
  if (typeof v !== "string" || Number.isNaN(Date.parse(v)))
    throw invalid(`${what} must be an ISO date string`);
  return v;
}

export function normalizeCluster<R extends ClusterInput>(r: R): R {
  validateClusterName(r.name);
  if (!isAuthMode(r.auth)) {
    throw invalid(`cluster ${r.name}: auth must be "impersonate" or "passthrough"`);
  }
  if (!isPlainObject(r.labels) || !Object.values(r.labels).every((v) => typeof v === "string")) {
    throw invalid(`cluster ${r.name}: labels must map strings to strings`);
  }
  if (!isStringArray(r.allowedUsers) || !isStringArray(r.allowedGroups)) {
    throw invalid(`cluster ${r.name}: allowedUsers and allowedGroups must be arrays of strings`);
  }
  if (r.uid !== undefined && !isIncarnation(r.uid))
    throw invalid(`cluster ${r.name}: uid must be a lowercase UUID`);
  return {
    name: r.name,
    auth: r.auth,
    labels: { ...r.labels },
    allowedUsers: [...r.allowedUsers],
    allowedGroups: [...r.allowedGroups],
    createdAt: checkIsoDate("createdAt", r.createdAt),
    ...(r.uid === undefined ? {} : { uid: r.uid }),
  } as R;
}

export function normalizeToken(r: TokenRecord): TokenRecord {
  if (!isTokenHash(r.hash)) throw invalid(`token hash must be "sha256:" and 64 hex digits (from hashToken)`);
  if (r.kind !== "user" && r.kind !== "join" && r.kind !== "admin") {
    throw invalid(`token kind must be "user", "join" or "admin"`);
  }
  const out: TokenRecord = { hash: r.hash, kind: r.kind, expiresAt: checkIsoDate("expiresAt", r.expiresAt) };
  if (r.cluster !== undefined) {
    validateClusterName(r.cluster);
    out.cluster = r.cluster;
  }
  if (r.kind === "join") {
    if (r.cluster === undefined) throw invalid("a join token needs the cluster it may join as");
  } else if (r.kind === "user") {
    if (typeof r.user !== "string" || r.user.length === 0) throw invalid("a user token needs a user");
    out.user = r.user;
    if (r.groups !== undefined) {
      if (!isStringArray(r.groups)) throw invalid("token groups must be an array of strings");
      out.groups = [...r.groups];
    }
    if (r.clusters !== undefined) {
      if (!isStringArray(r.clusters) || !r.clusters.every((c) => c === "*" || isValidClusterName(c))) {
        throw invalid(`token clusters must be cluster names or "*"`);
      }
      out.clusters = [...r.clusters];
    }
  }
  if (r.usedAt !== undefined) out.usedAt = checkIsoDate("usedAt", r.usedAt);
  return out;
}

const SERIAL_RE = /^[0-9a-f]{1,40}$/;

export function normalizeSerial(serial: string): string {
  const s = String(serial)
    .toLowerCase()
    .replace(/^(00)+(?=[0-9a-f])/, "");
  if (!SERIAL_RE.test(s)) throw invalid("a certificate serial must be hex (as X509Certificate.serialNumber)");
  return s;
}
