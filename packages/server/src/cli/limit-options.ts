// The `serve` flags of the limits in limits.ts, declared from LIMIT_FLAGS so
// that a new limit gets its flag, default and --help line in one place.
import { type Command, InvalidArgumentError, Option } from "commander";
import {
  DEFAULT_LIMITS,
  formatDuration,
  LIMIT_FLAGS,
  type Limits,
  parseCount,
  parseDuration,
  resolveLimits,
} from "../http/limits.js";

function asFlagValue(parse: (text: string) => number): (text: string) => number {
  return (text) => {
    try {
      return parse(text);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  };
}

/** Adds a flag for every limit to `cmd`. */
export function addLimitOptions(cmd: Command): Command {
  for (const spec of LIMIT_FLAGS) {
    const value = DEFAULT_LIMITS[spec.key];
    const duration = spec.kind === "duration";
    cmd.addOption(
      new Option(spec.flag, spec.help)
        .default(value, duration ? formatDuration(value) : String(value))
        .argParser(asFlagValue(duration ? (text) => parseDuration(text, spec.zero === true) : parseCount)),
    );
  }
  return cmd;
}

/** The limits in the parsed options of a command `addLimitOptions` prepared. */
export function limitsFromOptions(opts: object): Limits {
  const limits: Partial<Limits> = {};
  for (const spec of LIMIT_FLAGS) {
    const value = (opts as Record<string, unknown>)[new Option(spec.flag).attributeName()];
    if (typeof value === "number") limits[spec.key] = value;
  }
  // Checked together as well: some limits bound others.
  return resolveLimits(limits);
}
