/**
 * `tsx bench/cpu-profile-summary.ts [--top N] <file.cpuprofile>...`: where a
 * V8 CPU profile's time went, as self time per function and per module (a
 * package under node_modules, a file of packages/tunnel, Node's own internals,
 * or V8's pseudo-frames such as (garbage collector)). Percentages are of the
 * profile's busy time: (idle) is left out, so two profiles of the same
 * transfer compare even when one waited longer, and so is node:inspector
 * (the profiler starting and stopping itself).
 */

import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** The module a frame belongs to: what a reader looks for first. */
function moduleOf(url: string, name: string): string {
  if (url === "") return name.startsWith("(") ? name : "(native)";
  if (url.startsWith("node:")) return url.replace(/^node:internal\//, "node:");
  const nm = url.lastIndexOf("/node_modules/");
  if (nm >= 0) {
    const rest = url.slice(nm + "/node_modules/".length).split("/");
    return rest[0]!.startsWith("@") ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  const src = url.indexOf("/packages/");
  if (src >= 0) return url.slice(src + 1).replace(/^packages\/([^/]+)\/(src|dist)\//, "$1/");
  const bench = url.indexOf("/bench/");
  if (bench >= 0) return url.slice(bench + 1);
  return path.basename(url);
}

function summarise(file: string, top: number): string {
  const profile = JSON.parse(fs.readFileSync(file, "utf8")) as Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const perFunction = new Map<string, number>();
  const perModule = new Map<string, number>();
  let busy = 0;
  let idle = 0;
  for (const [id, us] of self) {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    if (functionName === "(idle)" || url === "node:inspector") {
      idle += us;
      continue;
    }
    busy += us;
    const mod = moduleOf(url, functionName);
    const fn = `${functionName || "(anonymous)"} ${mod}${url === "" ? "" : `:${lineNumber + 1}`}`;
    perFunction.set(fn, (perFunction.get(fn) ?? 0) + us);
    perModule.set(mod, (perModule.get(mod) ?? 0) + us);
  }
  const table = (m: Map<string, number>) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(
        ([k, us]) =>
          `  ${((100 * us) / busy).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(6)} ms  ${k}`,
      )
      .join("\n");
  return [
    `${path.basename(file)}: busy ${(busy / 1000).toFixed(0)} ms, idle ${(idle / 1000).toFixed(0)} ms`,
    " by module:",
    table(perModule),
    " by function (self):",
    table(perFunction),
  ].join("\n");
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: "string", default: "15" } },
});
for (const file of positionals) console.log(`${summarise(file, Number(values.top))}\n`);
