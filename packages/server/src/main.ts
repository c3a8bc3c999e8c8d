// Entry point of the tether-server command.
import { main } from "./cli/cli.js";

main(process.argv).catch((err: Error) => {
  console.error(`tether-server: ${err.message}`);
  process.exitCode = 1;
});
