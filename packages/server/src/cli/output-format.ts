// How the admin commands print: kubectl-style aligned tables for people, JSON
// and YAML for scripts. Every function returns the text (ending in a newline)
// rather than writing it, so callers decide where output goes.
import { stringify as yamlStringify } from "yaml";

export type OutputFormat = "table" | "json" | "yaml";

/** Shown in a table cell that has no value, as kubectl does. */
export const NONE = "<none>";

/**
 * Left-aligned columns separated by three spaces, upper-case headers, no
 * trailing spaces. Cells are made single-line (control characters become
 * spaces) so a hostile label value can't forge table rows.
 */
export function formatTable(headers: string[], rows: string[][]): string {
  const clean = (s: string) => (s.length === 0 ? NONE : s.replace(/\p{Cc}/gu, " "));
  const all = [
    headers.map((h) => h.toUpperCase()),
    ...rows.map((r) => headers.map((_, i) => clean(r[i] ?? ""))),
  ];
  const widths = headers.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  return all
    .map((r) =>
      r
        .map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!)))
        .join("   ")
        .trimEnd(),
    )
    .join("\n")
    .concat("\n");
}

/** Pretty JSON, one document. */
export function formatJson(value: unknown): string {
  return JSON.stringify(value, null, 2) + "\n";
}

/** YAML, one document. */
export function formatYaml(value: unknown): string {
  return yamlStringify(value, { lineWidth: 0 });
}

/** `value` as JSON or YAML, or `table()` for the human format. */
export function formatAs(format: OutputFormat, value: unknown, table: () => string): string {
  switch (format) {
    case "json":
      return formatJson(value);
    case "yaml":
      return formatYaml(value);
    case "table":
      return table();
  }
}

/** Labelled lines ("Key:   value"), the keys padded to one width. */
export function formatFields(fields: [string, string][]): string {
  const width = Math.max(0, ...fields.map(([k]) => k.length + 1));
  return fields.map(([k, v]) => `${(k + ":").padEnd(width)}  ${v}`).join("\n") + "\n";
}
