#!/usr/bin/env node
// Checked before anything loads: on an older Node the dependencies fail with errors that do not say why.
import { readFileSync } from "node:fs";

const { engines } = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
const required = Number(engines.node.replace(/^>=/, "").split(".")[0]);
if (Number(process.version.slice(1).split(".")[0]) < required) {
  process.stderr.write(
    `ERR_TETHER_NODE_VERSION: tether-server needs Node.js ${required} or newer (this is ${process.version})\n`,
  );
  process.exit(1);
}
await import("../dist/main.js");
