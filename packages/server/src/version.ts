// tether-server's version, from its package.json: printed by --version and the
// tag of the container image the generated manifests reference.
import { packageVersion } from "@tether/common";

export const VERSION: string = packageVersion(import.meta.url);
