// Every error Tether means a person to read carries a stable code
// (ERR_TETHER_…, listed in docs/errors.md) next to its message.

export class TetherError extends Error {
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "TetherError";
  }
}

/** A plain Error with a `code`, for places that rethrow fs or network errors. */
export function codedError(code: string, message: string, cause?: unknown): Error & { code: string } {
  return new TetherError(code, message, cause === undefined ? undefined : { cause });
}

/** `CODE: message` — how both binaries print an error they stop on. */
export function formatError(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown };
  const message = typeof e?.message === "string" ? e.message : String(err);
  return typeof e?.code === "string" && e.code.startsWith("ERR_TETHER_") ? `${e.code}: ${message}` : message;
}
