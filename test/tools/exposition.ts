// Reading values out of a Prometheus text exposition, for assertions.

export type Labels = Record<string, string>;

interface Sample {
  name: string;
  labels: Labels;
  value: number;
}

function parseLabels(text: string | undefined): Labels {
  const labels: Labels = {};
  if (!text) return labels;
  for (const m of text.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[m[1]!] = m[2]!.replace(/\\(.)/g, "$1");
  return labels;
}

export function samples(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m) out.push({ name: m[1]!, labels: parseLabels(m[2]), value: Number(m[3]) });
  }
  return out;
}

/** The sum of the samples of `name` whose labels include `match` (0 when there are none). */
export function value(text: string, name: string, match: Labels = {}): number {
  let sum = 0;
  for (const s of samples(text)) {
    if (s.name !== name) continue;
    if (Object.entries(match).every(([k, v]) => s.labels[k] === v)) sum += s.value;
  }
  return sum;
}

/** Whether any sample of `name` has labels including `match`. */
export function has(text: string, name: string, match: Labels = {}): boolean {
  return samples(text).some(
    (s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v),
  );
}
