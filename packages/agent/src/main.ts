// Entry point of the tether-agent command.
import { main } from "./cli.js";

main(process.argv).catch((err: Error) => {
  console.error(`tether-agent: ${err.message}`);
  process.exitCode = 1;
});
