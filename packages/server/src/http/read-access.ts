// Who may read the server's metrics (/metrics): the admin
// token, or the read-only scrape token of --metrics-token-file, which can read
// and do nothing else. A user token or certificate is a known caller but no
// reader (403); anything else is unauthenticated (401, counted as a failed
// authentication of its source like the admin API's). The scrape token file
// is read again on SIGHUP, so a rotated Secret takes effect without a restart.
import { createHash, timingSafeEqual } from "node:crypto";
import { readFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { TLSSocket } from "node:tls";
import { sendStatus } from "@tether/common";
import { bearerToken, hashToken, looksLikeToken } from "../pki/tokens.js";
import type { Store } from "../store/state-store.js";

export const ERR_TETHER_METRICS_TOKEN = "ERR_TETHER_METRICS_TOKEN";
/** A scrape token shorter than this is refused at start: it would be guessable. */
export const MIN_SCRAPE_TOKEN_LENGTH = 32;

export type ReadDecision = "allowed" | "unauthenticated" | "forbidden";

const digest = (text: string) => createHash("sha256").update(text, "utf8").digest();

/**
 * Reads the scrape token from `path`: the file's content without surrounding
 * whitespace, one word of at least MIN_SCRAPE_TOKEN_LENGTH characters.
 */
export async function readScrapeToken(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw Object.assign(new Error(`cannot read --metrics-token-file ${path}: ${(err as Error).message}`), {
      code: ERR_TETHER_METRICS_TOKEN,
    });
  }
  const token = text.trim();
  if (token.length < MIN_SCRAPE_TOKEN_LENGTH || /\s/.test(token)) {
    throw Object.assign(
      new Error(
        `--metrics-token-file ${path} must hold one token of at least ${MIN_SCRAPE_TOKEN_LENGTH} characters and no whitespace (e.g. openssl rand -hex 32)`,
      ),
      { code: ERR_TETHER_METRICS_TOKEN },
    );
  }
  return token;
}

export class ReadAccess {
  /** SHA-256 of the scrape token: compared in constant time, whatever length a caller sends. */
  private scrapeDigest: Buffer | undefined;

  constructor(
    private readonly store: Store,
    scrapeToken?: string,
  ) {
    this.setScrapeToken(scrapeToken);
  }

  /** A rotated token file (SIGHUP): the old token stops reading at once. */
  setScrapeToken(scrapeToken: string | undefined): void {
    this.scrapeDigest = scrapeToken === undefined ? undefined : digest(scrapeToken);
  }

  async decide(req: IncomingMessage): Promise<ReadDecision> {
    const authorization = req.headers.authorization;
    if (authorization !== undefined) {
      const token = bearerToken(authorization);
      if (!token) return "unauthenticated";
      if (this.scrapeDigest && timingSafeEqual(digest(token), this.scrapeDigest)) return "allowed";
      if (!looksLikeToken(token)) return "unauthenticated";
      const record = await this.store.findToken(hashToken(token));
      if (!record) return "unauthenticated";
      return record.kind === "admin" ? "allowed" : "forbidden";
    }
    // A certificate from Tether's CA (a user's or a cluster's): a known caller, never a reader.
    return (req.socket as TLSSocket).authorized ? "forbidden" : "unauthenticated";
  }
}

/** Answers a refused read as a Status: 401 (a failed authentication) or 403. */
export function refuseRead(res: ServerResponse, decision: Exclude<ReadDecision, "allowed">): void {
  if (decision === "forbidden") {
    sendStatus(
      res,
      "Forbidden",
      "this credential may not read tether-server's metrics: use the admin token or the --metrics-token-file token",
    );
  } else {
    sendStatus(
      res,
      "Unauthorized",
      "reading tether-server's metrics needs a bearer token: the admin token or the --metrics-token-file token",
    );
  }
}
