// tether-server's command line: parsing only; the admin commands live in
// admin-commands.ts. Every failure, commander's own usage errors included,
// becomes one coded Error with a one-line message (main.ts prints it as
// "tether-server: CODE: message" and exits 1); --help and --version succeed.

import { formatError } from "@tether/common";
import { Command, type CommanderError } from "commander";
import { TetherCliError } from "../admin/admin-input.js";
import { VERSION } from "../version.js";
import {
  addAgentManifest,
  addClusterCommands,
  addJoinToken,
  addKubeconfig,
  addKubefed,
  addRotateAdminCredential,
} from "./admin-program.js";
import { addTokenCommands } from "./token-commands.js";
import { type CliIo, processIo } from "./cli-io.js";
import { addServe } from "./serve-command.js";
import { closeOpenedStores } from "./store-options.js";

export type { CliIo };
export { VERSION };

/** A usage error from commander, with the command it happened in. */
class UsageError extends Error {
  readonly code: string;
  constructor(
    readonly commanderError: CommanderError,
    commandPath: string,
  ) {
    const message =
      commanderError.code === "commander.help"
        ? `missing command; see "${commandPath} --help"`
        : `${commanderError.message.replace(/^error: /, "").trim()} (see "${commandPath} --help")`;
    super(message.replace(/\s*\n\s*/g, " "));
    this.code = commanderError.code;
  }
}

function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(" ");
}

/** tether-server's whole command tree, writing to `io`. */
export function buildProgram(io: CliIo = processIo): Command {
  const program = new Command("tether-server")
    .description(
      "The host side of Tether: accepts agents' outbound tunnels and serves each member cluster's Kubernetes API at /clusters/<name>/",
    )
    .version(VERSION, "-v, --version", "print the version")
    .helpOption("-h, --help", "show help")
    .helpCommand("help [command]", "show help for a command")
    .configureOutput({
      writeOut: (text) => io.stdout(text),
      writeErr: (text) => io.stderr(text),
      // Errors are thrown as UsageError and printed once, by the caller.
      outputError: () => {},
    });
  program.action(() => program.help());
  addServe(program);
  const out = (text: string) => io.stdout(text);
  addClusterCommands(program, out);
  addJoinToken(program, out);
  addKubeconfig(program, out);
  addAgentManifest(program, io);
  addKubefed(program, out);
  addRotateAdminCredential(program, out);
  addTokenCommands(program, out);
  const override = (cmd: Command) => {
    cmd.exitOverride((err) => {
      throw new UsageError(err, commandPath(cmd));
    });
    cmd.commands.forEach(override);
  };
  override(program);
  return program;
}

/**
 * Runs the command line (`argv` as in process.argv). Resolves when the command
 * is done (for `serve`: once it listens) or after --help/--version; rejects with
 * a coded Error whose message is one line, for the caller to print.
 */
export async function main(argv: string[], io: CliIo = processIo): Promise<void> {
  try {
    await buildProgram(io).parseAsync(argv);
  } catch (err) {
    if (err instanceof UsageError && err.commanderError.exitCode === 0) return; // --help, --version
    throw err;
  } finally {
    await closeOpenedStores();
  }
}

/**
 * `main` for in-process use: `args` are the user's arguments (no node/script),
 * an error is printed as "tether-server: CODE: message" on `io.stderr`. Returns
 * the exit code.
 */
export async function runCli(args: string[], io: CliIo = processIo): Promise<number> {
  try {
    await main(["node", "tether-server", ...args], io);
    return 0;
  } catch (err) {
    io.stderr(`tether-server: ${oneLine(err)}\n`);
    return 1;
  }
}

/** `runCli` with its output captured, for embedding and tests. */
export async function runCliCaptured(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  const code = await runCli(args, {
    stdout: (text) => {
      stdout += text;
    },
    stderr: (text) => {
      stderr += text;
    },
  });
  return { code, stdout, stderr };
}

/** `CODE: message` (formatError) on one line. */
function oneLine(err: unknown): string {
  return formatError(err).replace(/\s*\n\s*/g, " ");
}

export { TetherCliError };
