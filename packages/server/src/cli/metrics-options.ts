// The `serve` flags of /metrics (docs/metrics.md): who besides the admin may
// scrape it, and turning the instrumentation off.
import { type Command, Option } from "commander";
import { readScrapeToken } from "../http/read-access.js";
import type { ServerOptions } from "../server.js";

export interface MetricsFlags {
  metrics: boolean;
  metricsTokenFile?: string;
}

export function addMetricsOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option(
        "--metrics-token-file <path>",
        "a read-only bearer token (one line, at least 32 characters) that may GET /metrics besides the admin token",
      ),
    )
    .addOption(new Option("--no-metrics", "collect no metrics and answer /metrics with 404"));
}

/** The ServerOptions the flags ask for; reads the token file (a coded error when it is unusable). */
export async function metricsFromOptions(
  opts: MetricsFlags,
): Promise<Pick<ServerOptions, "metrics" | "metricsToken">> {
  return {
    metrics: opts.metrics,
    ...(opts.metricsTokenFile ? { metricsToken: await readScrapeToken(opts.metricsTokenFile) } : {}),
  };
}
