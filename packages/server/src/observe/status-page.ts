// GET /status on the server's HTTPS port: every registered cluster and its
// agent session on this replica, and the replica's health, as a page for a
// person (status-html.ts) or, with ?format=json, the same facts as JSON.
// Only a caller `mayRead` admits sees it; anyone else gets a 401 Status that
// lets a browser ask for the token (HTTP Basic, the token as the password).
import type { IncomingMessage, ServerResponse } from "node:http";
import { sendStatus, statusBody } from "@tether/common";
import { renderStatusPage, STATUS_CSP } from "./status-html.js";
import type { StatusSnapshot } from "./status-model.js";

export const STATUS_PATH = "/status";

export interface StatusPageDeps {
  /** Whether the request carries a credential that may read the status. */
  mayRead(req: IncomingMessage): Promise<boolean>;
  snapshot(): Promise<StatusSnapshot>;
}

const COMMON_HEADERS = {
  "cache-control": "no-store",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
};

export async function serveStatus(
  deps: StatusPageDeps,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  if (req.method !== "GET" && req.method !== "HEAD") {
    sendStatus(res, "BadRequest", "/status answers GET and HEAD only");
    return;
  }
  if (!(await deps.mayRead(req))) {
    // A browser shows a login prompt for Basic; the Bearer challenge is for programs.
    const body = statusBody(
      "Unauthorized",
      "/status needs the admin token (as a bearer token, or as the password of Basic auth)",
    );
    res.writeHead(401, {
      ...COMMON_HEADERS,
      "content-type": "application/json",
      "content-length": Buffer.byteLength(body),
      "www-authenticate": ['Basic realm="tether status", charset="UTF-8"', 'Bearer realm="tether"'],
    });
    res.end(body);
    return;
  }
  const snapshot = await deps.snapshot();
  const query = new URLSearchParams((req.url ?? "").split("?")[1] ?? "");
  const json = query.get("format") === "json";
  const body = json ? `${JSON.stringify(snapshot, null, 2)}\n` : renderStatusPage(snapshot);
  res.writeHead(200, {
    ...COMMON_HEADERS,
    "content-type": json ? "application/json" : "text/html; charset=utf-8",
    "content-security-policy": STATUS_CSP,
    "content-length": Buffer.byteLength(body),
  });
  res.end(body);
}
