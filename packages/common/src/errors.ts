// The codes @tether/common throws, and the shape every package's catalogue
// shares: one table per package, so docs/errors.md and the HTTP status an
// endpoint answers with come from one place (test/errors-catalogue.test.ts
// checks that every code thrown in packages/*/src is in its package's table).

export interface ErrorInfo {
  /** The HTTP status when the admin API or an endpoint answers with this code; none: it never leaves the process. */
  readonly status?: number;
  /** What the person reading the error should do. */
  readonly hint: string;
}

export type ErrorCatalogue = Readonly<Record<string, ErrorInfo>>;

export const COMMON_ERRORS = {
  ERR_TETHER_STATE_CORRUPT: {
    hint: "a state file is not what Tether wrote (not JSON, wrong shape): restore it from a backup, or move it away to start that part of the state afresh",
  },
  ERR_TETHER_HEAD_INVALID: {
    hint: "the other end of a tunnel stream sent a request or response head that is not the format of packages/common/HEAD.md (the caller gets 502): run matching tether-server and tether-agent releases",
  },
  ERR_TETHER_HEAD_TOO_LARGE: {
    hint: "a request or response head is larger than 64 KiB and was refused (the caller gets 400, or 502 when the agent sent it): send fewer or smaller headers",
  },
} as const satisfies ErrorCatalogue;
