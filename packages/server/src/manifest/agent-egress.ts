// The agent's egress proxy in its manifest: --agent-proxy and
// --agent-no-proxy of `agent-manifest`. The proxy URL may carry the proxy's
// password, so it always goes into the join Secret and reaches the pod as
// HTTPS_PROXY through a secretKeyRef, never in clear in the Deployment;
// NO_PROXY holds no secret and is a plain env value.
import type { V1EnvVar } from "@kubernetes/client-node";
import { parseProxyUrl } from "@tether/common";
import { fail } from "../admin/admin-input.js";

export const ERR_TETHER_BAD_PROXY = "ERR_TETHER_BAD_PROXY";
/** The join Secret's key for the proxy URL. */
export const PROXY_SECRET_KEY = "httpsProxy";
const MAX_NO_PROXY = 4096;

export interface AgentEgress {
  /** http(s)://[user:password@]host:port */
  proxy?: string | undefined;
  /** NO_PROXY for the agent, e.g. ".corp.example,10.0.0.0/8". */
  noProxy?: string | undefined;
}

/** Refuses what the agent would refuse at start (one parser for both), without echoing a URL that may hold a password. */
export function checkEgress(egress: AgentEgress): AgentEgress {
  if (egress.proxy !== undefined) {
    const parsed = parseProxyUrl(egress.proxy);
    if ("problem" in parsed) {
      const gap = parsed.problem.startsWith(":") ? "" : " ";
      fail(ERR_TETHER_BAD_PROXY, `--agent-proxy${gap}${parsed.problem}`);
    }
  }
  if (
    egress.noProxy !== undefined &&
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
    (egress.noProxy.length > MAX_NO_PROXY || /[\x00-\x1f\x7f]/.test(egress.noProxy))
  ) {
    fail(
      ERR_TETHER_BAD_PROXY,
      `--agent-no-proxy is a list of hosts, domains and ranges of at most ${MAX_NO_PROXY} characters`,
    );
  }
  return egress;
}

/** The join Secret's extra data and the container's extra env. */
export function egressObjects(
  egress: AgentEgress,
  joinSecret: string,
): { secretData: Record<string, string>; env: V1EnvVar[] } {
  const env: V1EnvVar[] = [];
  const secretData: Record<string, string> = {};
  if (egress.proxy !== undefined) {
    secretData[PROXY_SECRET_KEY] = egress.proxy;
    env.push({
      name: "HTTPS_PROXY",
      valueFrom: { secretKeyRef: { name: joinSecret, key: PROXY_SECRET_KEY } },
    });
  }
  if (egress.noProxy !== undefined) env.push({ name: "NO_PROXY", value: egress.noProxy });
  return { secretData, env };
}
