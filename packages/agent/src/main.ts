// Entry point of the tether-agent command.
import { main } from "./cli.js";

main(process.argv).catch((err: Error & { code?: unknown }) => {
  // Coded errors lead with their code, so logs and alerts can match on it.
  const code = typeof err.code === "string" && err.code.startsWith("ERR_TETHER") ? `${err.code}: ` : "";
  console.error(`tether-agent: ${code}${err.message}`);
  process.exitCode = 1;
});
