// `token list` and `token revoke`: user tokens by id (admin/token-admin.ts),
// on the state or, with --credential, through a running server's admin API
// (which then ends what the revoked tokens hold open at once; a server on the
// same state does so within its session check interval). Neither prints a
// token or its hash.
import { type Command, Option } from "commander";
import type { TokenInfo, TokenSelector } from "../admin/token-admin.js";
import type { AdminContext } from "./admin-commands.js";
import { serverOption } from "./option-parsers.js";
import { formatAs, formatTable, type OutputFormat } from "./output-format.js";
import { addAdminOptions, adminFor, type StoreOptions } from "./store-options.js";

export async function tokenList(
  ctx: AdminContext,
  opts: { user?: string; output?: OutputFormat; server?: string } = {},
): Promise<TokenInfo[]> {
  const admin = await ctx.admin(opts.server);
  const tokens = await admin.listTokens(opts.user);
  const format = opts.output ?? "table";
  if (format === "table" && tokens.length === 0) {
    ctx.out(`No user tokens${opts.user === undefined ? "" : ` of ${opts.user}`} in ${admin.where}.\n`);
    return tokens;
  }
  ctx.out(
    formatAs(format, { tokens }, () =>
      formatTable(
        ["id", "user", "groups", "clusters", "expires"],
        tokens.map((t) => [t.id, t.user, t.groups.join(","), t.clusters.join(","), t.expiresAt]),
      ),
    ),
  );
  return tokens;
}

export async function tokenRevoke(
  ctx: AdminContext,
  selector: TokenSelector,
  opts: { server?: string } = {},
): Promise<TokenInfo[]> {
  const revoked = await (await ctx.admin(opts.server)).revokeTokens(selector);
  const ids = revoked.map((t) => t.id).join(", ");
  ctx.out(
    "id" in selector
      ? `Revoked token ${selector.id}.\n`
      : revoked.length === 0
        ? `No user tokens of ${selector.user} to revoke.\n`
        : `Revoked ${revoked.length} token${revoked.length === 1 ? "" : "s"} of user ${selector.user}: ${ids}.\n`,
  );
  return revoked;
}

export function addTokenCommands(program: Command, out: (text: string) => void): void {
  const ctx = (o: StoreOptions): AdminContext => ({ out, admin: (serverFlag) => adminFor(o, serverFlag) });
  const token = program
    .command("token")
    .description("list and revoke user tokens (those kubeconfig and kubefed issue)")
    .helpOption("-h, --help", "show help");
  addAdminOptions(token.command("list"))
    .alias("ls")
    .description("list unexpired user tokens: id, user, groups, clusters, expiry (never the token)")
    .option("--user <user>", "only this user's tokens")
    .addOption(
      new Option("-o, --output <format>", "table, json or yaml")
        .choices(["table", "json", "yaml"])
        .default("table"),
    )
    .addOption(serverOption())
    .action(async (o: StoreOptions & { user?: string; output: OutputFormat; server?: string }) => {
      await tokenList(ctx(o), {
        output: o.output,
        ...(o.user === undefined ? {} : { user: o.user }),
        ...(o.server ? { server: o.server } : {}),
      });
    });
  addAdminOptions(token.command("revoke"))
    .description(
      "revoke a user token by id, or every token of --user: new requests get 401 and the watches, " +
        "logs -f, exec, attach and port-forward it holds are closed",
    )
    .argument("[id]", "the token's id, as token list shows it")
    .option("--user <user>", "revoke every token of this user")
    .addOption(serverOption())
    .action(async (id: string | undefined, o: StoreOptions & { user?: string; server?: string }) => {
      if ((id === undefined) === (o.user === undefined)) {
        token.commands
          .find((c) => c.name() === "revoke")!
          .error("give either a token id or --user", { code: "tether.usage" });
      }
      await tokenRevoke(
        ctx(o),
        id === undefined ? { user: o.user! } : { id },
        o.server ? { server: o.server } : {},
      );
    });
}
