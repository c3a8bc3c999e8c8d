// tether-server's command line. Subcommands land here as they are built.
import { readFileSync } from "node:fs";
import { Command } from "commander";

export const VERSION: string = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")).version;

export function buildProgram(): Command {
  return new Command("tether-server")
    .description(
      "The host side of Tether: accepts agents' outbound tunnels and serves each member cluster's Kubernetes API at /clusters/<name>/",
    )
    .version(VERSION, "-v, --version", "print the version")
    .helpOption("-h, --help", "show help")
    .showHelpAfterError("(run tether-server --help for usage)");
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  program.action(() => program.help());
  await program.parseAsync(argv);
}
