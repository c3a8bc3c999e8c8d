// Entry point of the tether-server command.
import { formatError } from "@tether/common";
import { main } from "./cli/cli.js";

main(process.argv).catch((err: unknown) => {
  // Coded errors lead with their code, so logs and alerts can match on it.
  console.error(`tether-server: ${formatError(err).replace(/\s*\n\s*/g, " ")}`);
  process.exitCode = 1;
});
