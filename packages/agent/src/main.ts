// Entry point of the tether-agent command.
import { formatError } from "@tether/common";
import { main } from "./cli.js";

main(process.argv).catch((err: unknown) => {
  // Coded errors lead with their code, so logs and alerts can match on it.
  console.error(`tether-agent: ${formatError(err)}`);
  process.exitCode = 1;
});
