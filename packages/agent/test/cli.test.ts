// The tether-agent bin as installed: --version and --help work, and a bad flag
// gets a clear error and a non-zero exit, not a stack trace.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { buildProgram } from "../src/cli.js";

const bin = new URL("../bin/tether-agent.js", import.meta.url).pathname;
const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
const run = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: "utf8" });

t.test("--version prints the package version", async (t) => {
  const r = run("--version");
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout.trim(), pkg.version);
});

t.test("--help describes the command", async (t) => {
  const r = run("--help");
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /Usage: tether-agent/);
  t.match(r.stdout, /--version/);
});

t.test("an unknown flag is refused with a usable message", async (t) => {
  const r = run(
    "--server",
    "https://x",
    "--ca-file",
    "a",
    "--cert-file",
    "b",
    "--key-file",
    "c",
    "--no-such-flag",
  );
  t.not(r.status, 0);
  t.match(r.stderr, /unknown option '--no-such-flag'/);
  t.notMatch(r.stderr, / {4}at /, "no stack trace");
});

t.test("--proxy: an empty value and a bad URL are refused, without echoing a password", async (t) => {
  const base = ["--server", "https://x", "--ca-file", "a", "--cert-file", "b", "--key-file", "c"];
  const empty = run(...base, "--proxy", "");
  t.not(empty.status, 0);
  t.match(empty.stderr, /NO_PROXY=\*/, "says how to go direct");
  const socks = run(...base, "--proxy", "socks5://u:hunter2@proxy:1080");
  t.not(socks.status, 0);
  t.match(socks.stderr, /ERR_TETHER_AGENT_PROXY_URL|SOCKS is not supported/);
  t.notMatch(socks.stderr, /hunter2/);
  const env = spawnSync(process.execPath, [bin, ...base], {
    encoding: "utf8",
    env: { ...process.env, HTTPS_PROXY: "ftp://u:hunter2@proxy" },
  });
  t.not(env.status, 0);
  t.match(env.stderr, /^tether-agent: ERR_TETHER_AGENT_PROXY_URL: HTTPS_PROXY/m);
  t.notMatch(env.stderr, /hunter2/);
});

t.test("--expose: a bad value and a name given twice are refused, without echoing a password", async (t) => {
  const base = ["--server", "https://x", "--ca-file", "a", "--cert-file", "b", "--key-file", "c"];
  const secret = run(...base, "--expose", "web=http://u:hunter2@web.svc:80");
  t.not(secret.status, 0);
  t.match(
    secret.stderr,
    /^tether-agent: ERR_TETHER_AGENT_EXPOSE: --expose: web: the URL may not carry credentials/m,
  );
  t.notMatch(secret.stderr, /hunter2/);
  const twice = run(...base, "--expose", "web=http://a.svc", "--expose", "web=http://b.svc");
  t.match(twice.stderr, /ERR_TETHER_AGENT_EXPOSE: --expose: web is exposed twice/);
  const name = run(...base, "--expose", "Web_UI=http://a.svc");
  t.match(name.stderr, /ERR_TETHER_AGENT_EXPOSE: --expose: must be NAME=URL/);
});

t.test("a missing required flag is named", async (t) => {
  const r = run();
  t.not(r.status, 0);
  t.match(r.stderr, /required option '--server <url>' not specified/);
});

t.test("an unreadable file is named with its flag", async (t) => {
  const r = run(
    "--server",
    "https://x",
    "--ca-file",
    "/nonexistent/ca.pem",
    "--cert-file",
    "b",
    "--key-file",
    "c",
  );
  t.not(r.status, 0);
  t.match(r.stderr, /--ca-file \/nonexistent\/ca\.pem/);
  t.notMatch(r.stderr, / {4}at /, "no stack trace");
});

t.test("a --credentials-secret that is no Secret name is refused before anything runs", async (t) => {
  const r = run("--server", "https://x", "--credentials-secret", "Not_A/Name");
  t.not(r.status, 0);
  t.match(r.stderr, /--credentials-secret <name>' argument 'Not_A\/Name' is invalid/);
  t.match(r.stderr, /lowercase letters, digits/);
});

t.test("TETHER_* environment variables stand in for the join flags; a flag wins", async (t) => {
  const saved = { ...process.env };
  t.teardown(() => {
    process.env = saved;
  });
  Object.assign(process.env, {
    TETHER_SERVER: "https://from-env:8443",
    TETHER_CLUSTER: "from-env",
    TETHER_JOIN_TOKEN: "env-token",
    TETHER_CA_HASH: "sha256:env",
    TETHER_CREDENTIALS_SECRET: "env-secret",
  });
  const fromEnv = buildProgram().parse(["node", "tether-agent"]).opts();
  t.match(fromEnv, {
    server: "https://from-env:8443",
    cluster: "from-env",
    token: "env-token",
    caHash: "sha256:env",
    credentialsSecret: "env-secret",
  });
  const flags = buildProgram()
    .parse([
      "node",
      "tether-agent",
      "--cluster",
      "from-flag",
      "--token",
      "flag-token",
      "--credentials-secret",
      "flag-secret",
    ])
    .opts();
  t.match(flags, {
    cluster: "from-flag",
    token: "flag-token",
    credentialsSecret: "flag-secret",
    server: "https://from-env:8443",
  });
});

t.test("--token-file names a file with the join token; it and --token exclude each other", async (t) => {
  const opts = buildProgram()
    .parse(["node", "tether-agent", "--server", "https://x", "--token-file", "/run/t"])
    .opts();
  t.equal(opts.tokenFile, "/run/t");
  const r = run("--server", "https://x", "--token", "a", "--token-file", "/run/t");
  t.not(r.status, 0);
  t.match(r.stderr, /--token-file <path>' cannot be used with option '--token <token>'/);
  t.match(buildProgram().helpInformation().replace(/\s+/g, " "), /prefer TETHER_JOIN_TOKEN or --token-file/);
});

t.test("the bin prints a coded error as 'tether-agent: CODE: message'", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "tether-agent-cli-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = run("--server", "https://127.0.0.1:1", "--state-dir", dir);
  t.equal(r.status, 1);
  t.match(r.stderr, /^tether-agent: ERR_TETHER_AGENT_NOT_JOINED: not joined yet \(nothing in [^\n]*\n$/);
});
