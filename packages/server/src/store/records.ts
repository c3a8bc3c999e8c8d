// Validation of the records a store keeps: what is written is checked the
// same way whichever store writes it, and a record that fails is refused with
// ERR_TETHER_INVALID_RECORD before anything is written.
import { codedError, isAuthMode, isExposedServiceName } from "@tether/common";
import { isIncarnation, isValidClusterName, validateClusterName } from "../pki/pki.js";
import { isTokenHash } from "../pki/tokens.js";
import {
  type ClusterInput,
  ERR_TETHER_INVALID_RECORD,
  type ServiceAccess,
  type TokenRecord,
} from "./state-store.js";

/**
 * A record as a store's reads on the request path hand it out: deeply
 * read-only, because it is the store's own cached copy, shared by every
 * caller instead of cloned per request (structuredClone was a measurable
 * share of a small GET's CPU). The type stops callers from changing it;
 * deepFreeze makes a change that slips past the type throw.
 */
export type Frozen<T> = T extends readonly (infer U)[]
  ? readonly Frozen<U>[]
  : T extends object
    ? { readonly [K in keyof T]: Frozen<T[K]> }
    : T;

/** Freezes `value` and everything reachable from it, in place; returns it. */
export function deepFreeze<T>(value: T): Frozen<T> {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value as Frozen<T>;
}

/** How many exposed services one cluster may list. */
export const MAX_SERVICES_PER_CLUSTER = 64;

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
  const services = normalizeServices(r.name, r.services);
  return {
    name: r.name,
    auth: r.auth,
    labels: { ...r.labels },
    allowedUsers: [...r.allowedUsers],
    allowedGroups: [...r.allowedGroups],
    createdAt: checkIsoDate("createdAt", r.createdAt),
    ...(r.uid === undefined ? {} : { uid: r.uid }),
    ...(services ? { services } : {}),
  } as R;
}

function normalizeServices(cluster: string, services: unknown): Record<string, ServiceAccess> | undefined {
  if (services === undefined) return undefined;
  if (!isPlainObject(services)) throw invalid(`cluster ${cluster}: services must map names to access lists`);
  const names = Object.keys(services);
  if (names.length > MAX_SERVICES_PER_CLUSTER)
    throw invalid(`cluster ${cluster}: at most ${MAX_SERVICES_PER_CLUSTER} services`);
  if (names.length === 0) return undefined;
  const out: Record<string, ServiceAccess> = {};
  for (const name of names.sort()) {
    const access = services[name];
    if (!isExposedServiceName(name))
      throw invalid(
        `cluster ${cluster}: service name ${JSON.stringify(name.slice(0, 80))} is not a DNS label of at most 55 characters`,
      );
    if (!isPlainObject(access) || !isStringArray(access.allowedUsers) || !isStringArray(access.allowedGroups))
      throw invalid(
        `cluster ${cluster}: service ${name} needs allowedUsers and allowedGroups arrays of strings`,
      );
    out[name] = { allowedUsers: [...access.allowedUsers], allowedGroups: [...access.allowedGroups] };
  }
  return out;
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

/** The serial as stores key it, undefined when it is not one (then nothing of it can be revoked). */
export function serialKey(serial: string): string | undefined {
  try {
    return normalizeSerial(serial);
  } catch {
    return undefined;
  }
}

export function normalizeSerial(serial: string): string {
  const s = String(serial)
    .toLowerCase()
    .replace(/^(00)+(?=[0-9a-f])/, "");
  if (!SERIAL_RE.test(s)) throw invalid("a certificate serial must be hex (as X509Certificate.serialNumber)");
  return s;
}
