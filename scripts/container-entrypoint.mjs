// The container image's entrypoint (Dockerfile): the first argument names the
// program, the rest are its arguments, so that one image runs both sides:
//   IMAGE tether-server serve --store kubernetes ...    IMAGE tether-agent --credentials-secret ...
// The image keeps the repository's layout, so this runs unchanged from a checkout too.
const PROGRAMS = new Map([
  ["tether-server", "../packages/server/dist/main.js"],
  ["tether-agent", "../packages/agent/dist/main.js"],
]);

const [node, , name, ...args] = process.argv;
const program = PROGRAMS.get(name ?? "");
if (!program) {
  process.stderr.write(
    `usage: tether-server <command> [options] | tether-agent [options] (got ${JSON.stringify(name ?? "")})\n`,
  );
  process.exit(2);
}
// The program parses process.argv as `node <script> <args>`.
process.argv = [node, name, ...args];
await import(new URL(program, import.meta.url).href);
