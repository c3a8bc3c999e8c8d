export { buildProgram, main, VERSION } from "./cli.js";
