// The `serve` flags of the audit log (observe/audit-log.ts): where it goes and
// how much it records. The level defaults to metadata when a destination is
// given and to none otherwise; metadata without a destination is refused
// rather than silently recording nothing.
import { type Command, Option } from "commander";
import type { Logger } from "../logger.js";
import { AuditFile, ERR_TETHER_AUDIT_LOG } from "../observe/audit-file.js";
import type { AuditLog } from "../observe/audit-log.js";
import { fail } from "../admin/admin-input.js";

/** As in a Kubernetes audit policy; Tether keeps no bodies, so it has no Request level. */
export const AUDIT_LEVELS = ["none", "metadata"] as const;
export type AuditLevel = (typeof AUDIT_LEVELS)[number];

export interface AuditOptions {
  auditLog?: string;
  auditLevel?: AuditLevel;
}

export function addAuditOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option(
        "--audit-log <path|->",
        "write an audit line per proxied request, exec session, join, renewal and admin call to this file (appended, mode 0600, reopened on SIGHUP) or - for stdout (the log then goes to stderr)",
      ),
    )
    .addOption(
      new Option(
        "--audit-level <level>",
        "what the audit log records: none, or metadata (who, what, code, bytes, duration); default metadata with --audit-log, none without",
      ).choices(AUDIT_LEVELS),
    );
}

/** The level the options ask for, checked against the destination. */
export function auditLevelOf(opts: AuditOptions): AuditLevel {
  const level = opts.auditLevel ?? (opts.auditLog === undefined ? "none" : "metadata");
  if (level !== "none" && opts.auditLog === undefined) {
    fail(ERR_TETHER_AUDIT_LOG, `--audit-level ${level} needs --audit-log PATH (or - for stdout)`);
  }
  return level;
}

/** The audit log the options ask for, opened; undefined for level none. */
export async function openAuditLog(opts: AuditOptions, log: Logger): Promise<AuditLog | undefined> {
  if (auditLevelOf(opts) === "none" || opts.auditLog === undefined) return undefined;
  // Loaded here: audit-log.ts pulls in the proxy, which the admin commands do without.
  const { AuditLog } = await import("../observe/audit-log.js");
  return new AuditLog(await AuditFile.open({ target: opts.auditLog, log }));
}
