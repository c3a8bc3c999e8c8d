// The agent's version, from its package.json: printed by --version and sent to
// the server (X-Tether-Agent-Version) for the cluster's status.
import { packageVersion } from "@tether/common";

export const VERSION: string = packageVersion(import.meta.url);
