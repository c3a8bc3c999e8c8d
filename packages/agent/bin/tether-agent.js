#!/usr/bin/env node
import { main } from "../dist/cli.js";

main(process.argv).catch((err) => {
  console.error(`tether-agent: ${err.message}`);
  process.exitCode = 1;
});
