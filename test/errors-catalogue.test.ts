// One error catalogue per package, and docs/errors.md, hold every code the
// package throws: a code written in packages/<p>/src or bin must be in <p>'s
// catalogue (or @tether/common's, which server and agent build on), every
// catalogue entry must be thrown somewhere, and docs/errors.md must list each
// package's codes with the catalogue's status and hint, and nothing else. The
// tunnel's catalogue is its ErrorCode (its hints live in the doc only).
import { readdirSync, readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";
import t from "tap";
import { AGENT_ERRORS } from "../packages/agent/src/errors.js";
import { COMMON_ERRORS, type ErrorCatalogue } from "../packages/common/src/errors.js";
import { SERVER_ERRORS } from "../packages/server/src/errors.js";
import { ErrorCode } from "../packages/tunnel/src/errors.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const CODE = /ERR_TETHER_[A-Z0-9_]+/g;

function sourceFiles(dir: string): string[] {
  let entries: import("node:fs").Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries.flatMap((e) =>
    e.isDirectory()
      ? sourceFiles(join(dir, e.name))
      : /\.(ts|js|mjs)$/.test(e.name)
        ? [join(dir, e.name)]
        : [],
  );
}

/** Codes written in a package's src and bin, outside its catalogue file; the tunnel's through ErrorCode.NAME. */
function thrownIn(pkg: string): Map<string, string> {
  const found = new Map<string, string>();
  for (const sub of ["src", "bin"]) {
    for (const file of sourceFiles(join(root, "packages", pkg, sub))) {
      if (basename(file) === "errors.ts") continue; // the catalogue itself, wherever it lives
      const text = readFileSync(file, "utf8");
      const where = file.slice(root.length);
      for (const [code] of text.matchAll(CODE)) if (!found.has(code)) found.set(code, where);
      if (pkg === "tunnel") {
        for (const [, name] of text.matchAll(/ErrorCode\.([A-Z_]+)/g)) {
          const code = (ErrorCode as Record<string, string>)[name!];
          if (code && !found.has(code)) found.set(code, where);
        }
      }
    }
  }
  return found;
}

interface DocRow {
  status: string;
  hint: string;
}

/** docs/errors.md's tables, by the package its section names as `packages/<p>`. */
function documented(): Map<string, Map<string, DocRow>> {
  const doc = readFileSync(join(root, "docs/errors.md"), "utf8");
  const out = new Map<string, Map<string, DocRow>>();
  let section: Map<string, DocRow> | undefined;
  for (const line of doc.split("\n")) {
    const heading = /^## .*`packages\/([a-z]+)`/.exec(line);
    if (heading) {
      section = new Map();
      out.set(heading[1]!, section);
      continue;
    }
    const row = /^\| `(ERR_TETHER_[A-Z0-9_]+)` \| ([^|]*) \| (.*) \|$/.exec(line);
    if (row) {
      if (!section) throw new Error(`docs/errors.md lists ${row[1]} before any package section`);
      section.set(row[1]!, { status: row[2]!.trim(), hint: row[3]!.trim() });
    }
  }
  return out;
}

const docRow = (code: string, info: { status?: number; hint: string }) =>
  `| \`${code}\` | ${info.status ?? "—"} | ${info.hint} |`;

const catalogues: Record<string, ErrorCatalogue> = {
  common: COMMON_ERRORS,
  server: SERVER_ERRORS,
  agent: AGENT_ERRORS,
};

const docs = documented();

for (const [pkg, catalogue] of Object.entries(catalogues)) {
  t.test(`packages/${pkg}: every code thrown is catalogued and documented, and only those`, async (t) => {
    const thrown = thrownIn(pkg);
    t.ok(thrown.size > 0, "the scan finds codes");
    const base: ErrorCatalogue = pkg === "common" ? {} : COMMON_ERRORS;
    for (const [code, where] of thrown) {
      t.ok(
        Object.hasOwn(catalogue, code) || Object.hasOwn(base, code),
        `${code} (${where}) is in the catalogue`,
      );
    }
    for (const code of Object.keys(catalogue)) t.ok(thrown.has(code), `${code} is thrown somewhere`);
    const section = docs.get(pkg);
    t.ok(section, `docs/errors.md has a section for packages/${pkg}`);
    for (const [code, info] of Object.entries(catalogue)) {
      const row = section?.get(code);
      t.same(
        row,
        { status: String(info.status ?? "—"), hint: info.hint },
        `docs/errors.md: ${docRow(code, info)}`,
      );
    }
    for (const code of section?.keys() ?? [])
      t.ok(Object.hasOwn(catalogue, code), `${code} in docs/errors.md is catalogued`);
  });
}

t.test("packages/tunnel: ErrorCode is thrown and documented, code for code", async (t) => {
  const thrown = thrownIn("tunnel");
  const codes = Object.values(ErrorCode) as string[];
  for (const [code, where] of thrown) t.ok(codes.includes(code), `${code} (${where}) is an ErrorCode`);
  for (const code of codes) t.ok(thrown.has(code), `${code} is thrown somewhere`);
  const section = docs.get("tunnel");
  t.ok(section, "docs/errors.md has a section for packages/tunnel");
  t.same(
    [...(section?.keys() ?? [])].sort(),
    [...codes].sort(),
    "docs/errors.md lists exactly the ErrorCode values",
  );
  for (const [code, row] of section ?? []) t.ok(row.hint.length > 0, `${code} has a hint`);
});

t.test("every status in a catalogue is an HTTP error status", async (t) => {
  for (const catalogue of Object.values(catalogues)) {
    for (const [code, info] of Object.entries(catalogue) as [string, { status?: number }][]) {
      if (info.status !== undefined)
        t.ok(info.status >= 400 && info.status <= 599, `${code}: ${info.status}`);
    }
  }
});
