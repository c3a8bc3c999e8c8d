/**
 * A worker of the scale bench (scale.ts): many real agent sessions in one
 * process, each a TetherAgent with its own cluster certificate, dialing the
 * server over mutual-TLS WebSocket and redialing with the agent's own
 * backoff. Each worker also serves a stand-in apiserver the agents forward
 * to (only /version, which the server reads once per connect). The parent
 * gets the number of connected agents every 100 ms.
 */
import { createServer } from "node:https";
import { type KubeTarget, TetherAgent } from "@tether/agent";

export interface AgentCredentials {
  cluster: string;
  certPem: string;
  keyPem: string;
}

export type ToWorker =
  | {
      type: "config";
      server: string;
      caPem: string;
      apiserverCert: { certPem: string; keyPem: string };
      /** Forward to this apiserver (the watch source) instead of the worker's own stand-in. */
      targetUrl?: string;
      /** The tunnel's streams at once (and so the agent's apiserver connections); default the agent's. */
      maxStreams?: number;
    }
  | { type: "add"; agents: AgentCredentials[]; perSecond: number }
  | { type: "stop" };

export interface FromWorker {
  type: "count";
  connected: number;
  total: number;
  /** Times a connected agent was seen disconnected since the last report. */
  drops: number;
}

const agents: TetherAgent[] = [];
let config: Extract<ToWorker, { type: "config" }> | undefined;
let target: KubeTarget | undefined;

async function startApiserver(c: NonNullable<typeof config>): Promise<KubeTarget> {
  const server = createServer({ cert: c.apiserverCert.certPem, key: c.apiserverCert.keyPem }, (req, res) => {
    if (req.url === "/version") {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ major: "1", minor: "34", gitVersion: "v1.34.0-scale-bench" }));
      return;
    }
    res.writeHead(404, { "content-type": "application/json" });
    res.end("{}");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: new URL(`https://127.0.0.1:${port}`),
    tls: { ca: c.caPem },
    authorization: () => undefined,
    description: "scale bench stand-in apiserver",
  };
}

async function add(list: AgentCredentials[], perSecond: number): Promise<void> {
  if (!config || !target) throw new Error("config first");
  const batch = Math.max(1, Math.round(perSecond / 10));
  for (let i = 0; i < list.length; i += batch) {
    for (const a of list.slice(i, i + batch)) {
      const agent = new TetherAgent({
        server: config.server,
        caPem: config.caPem,
        certPem: a.certPem,
        keyPem: a.keyPem,
        target,
        ...(config.maxStreams ? { tunnel: { maxStreams: config.maxStreams } } : {}),
      });
      agent.start();
      agents.push(agent);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

let wasConnected: boolean[] = [];
setInterval(() => {
  let connected = 0;
  let drops = 0;
  for (let i = 0; i < agents.length; i++) {
    const now = agents[i]!.connected;
    if (now) connected++;
    else if (wasConnected[i]) drops++;
    wasConnected[i] = now;
  }
  const report: FromWorker = { type: "count", connected, total: agents.length, drops };
  process.send?.(report);
}, 100).unref();

process.on("message", (m: ToWorker) => {
  void (async () => {
    if (m.type === "config") {
      config = m;
      target = m.targetUrl
        ? {
            url: new URL(m.targetUrl),
            tls: { ca: m.caPem },
            authorization: () => undefined,
            description: "scale bench watch source",
          }
        : await startApiserver(m);
    } else if (m.type === "add") {
      await add(m.agents, m.perSecond);
    } else {
      await Promise.allSettled(agents.map((a) => a.stop()));
      wasConnected = [];
      process.exit(0);
    }
  })().catch((err) => {
    console.error(err);
    process.exit(1);
  });
});
process.on("disconnect", () => process.exit(0));
