// An identity source that could not answer (the host apiserver or the OIDC
// issuer is down or refuses Tether). The caller's credential was not judged,
// so the answer is a 503 that says so, never a 401 that reads as a bad token.
import { TetherError } from "@tether/common";

export const ERR_TETHER_IDENTITY_UNAVAILABLE = "ERR_TETHER_IDENTITY_UNAVAILABLE";

export class IdentityUnavailableError extends TetherError {
  constructor(message: string, cause?: unknown) {
    super(ERR_TETHER_IDENTITY_UNAVAILABLE, message, cause === undefined ? undefined : { cause });
    this.name = "IdentityUnavailableError";
  }
}
