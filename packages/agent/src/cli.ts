// tether-agent's command line.
import { readFileSync } from "node:fs";
import { Command } from "commander";

export const VERSION: string = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")).version;

export function buildProgram(): Command {
  return new Command("tether-agent")
    .description(
      "The member side of Tether: dials out to tether-server and forwards its requests to this cluster's Kubernetes API",
    )
    .version(VERSION, "-v, --version", "print the version")
    .helpOption("-h, --help", "show help")
    .showHelpAfterError("(run tether-agent --help for usage)");
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  program.action(() => program.help());
  await program.parseAsync(argv);
}
