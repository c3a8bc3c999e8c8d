// GET /metrics on the server's HTTPS port, for a reader (read-access.ts).
import type { IncomingMessage, ServerResponse } from "node:http";
import { sendStatus } from "@tether/common";
import { type ReadAccess, refuseRead } from "../http/read-access.js";
import type { TetherMetrics } from "./metrics.js";

export const METRICS_PATH = "/metrics";

export async function serveMetrics(
  req: IncomingMessage,
  res: ServerResponse,
  access: ReadAccess,
  metrics: TetherMetrics | undefined,
): Promise<void> {
  const decision = await access.decide(req);
  if (decision !== "allowed") {
    refuseRead(res, decision);
    return;
  }
  if (!metrics) {
    sendStatus(res, "NotFound", "this tether-server runs with --no-metrics");
    return;
  }
  if (req.method !== "GET" && req.method !== "HEAD") {
    sendStatus(res, "BadRequest", `${METRICS_PATH} answers GET only`);
    return;
  }
  const { contentType, body } = await metrics.exposition();
  res.writeHead(200, {
    "content-type": contentType,
    "content-length": Buffer.byteLength(body),
    "cache-control": "no-store",
  });
  res.end(req.method === "HEAD" ? undefined : body);
}
