// tether-server reads --metrics-token-file again on SIGHUP: a rotated token
// reads /metrics and the old one no longer does, without a restart; a file
// that holds no usable token leaves the token in force and says why.
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FileStore } from "@tether/server";
import t from "tap";
import { until } from "./fixture.js";
import { rawRequest } from "./raw-client.js";
import { signal, spawnServer } from "./tether-processes.js";

const dir = await mkdtemp(join(tmpdir(), "tether-scrape-reload-"));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const stateDir = join(dir, "state");
const caPem = (await (await FileStore.open(stateDir)).loadOrCreateCa()).certPem;
const tokenFile = join(dir, "metrics-token");
const FIRST = "a".repeat(40);
const SECOND = "b".repeat(40);
await writeFile(tokenFile, `${FIRST}\n`, { mode: 0o600 });
const serverLog = join(dir, "server.log");
const { proc, url } = await spawnServer(stateDir, caPem, serverLog, undefined, [
  "--metrics-token-file",
  tokenFile,
]);
t.teardown(() => proc.stop());

const scrape = async (token: string) =>
  (await rawRequest({ url, caPem }, "/metrics", { headers: { authorization: `Bearer ${token}` } })).status;

t.test("SIGHUP swaps the scrape token", async (t) => {
  t.equal(await scrape(FIRST), 200, "the first token reads");
  t.equal(await scrape(SECOND), 401, "the second does not yet");
  await writeFile(tokenFile, `${SECOND}\n`);
  signal(proc, "SIGHUP");
  await until("the second token reads", async () => (await scrape(SECOND)) === 200);
  t.equal(await scrape(FIRST), 401, "the first token no longer reads");
  t.match(await readFile(serverLog, "utf8"), /scrape token reloaded/);
});

t.test("an unusable file keeps the token in force", async (t) => {
  await writeFile(tokenFile, "short\n");
  signal(proc, "SIGHUP");
  await until("the failure is logged", async () =>
    (await readFile(serverLog, "utf8")).includes("scrape token reload failed"),
  );
  t.equal(await scrape(SECOND), 200, "the token in force still reads");
  t.match(await readFile(serverLog, "utf8"), /ERR_TETHER_METRICS_TOKEN/, "the log names the code");
  t.notMatch(await readFile(serverLog, "utf8"), new RegExp(SECOND), "the token is never logged");
});
