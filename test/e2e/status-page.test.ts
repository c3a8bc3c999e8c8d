// Issue 15, must show: headless Chromium (Debian's chromium) loads /status of
// a tether-server process with two registered members — one with its agent
// (a real tether-agent process in front of a harness apiserver) connected,
// one never connected — and the test reads the rendered DOM: both clusters,
// the connected one with an agent version, a Kubernetes version and an RTT,
// the other not connected; no markup from a label gets in; at a phone's size
// (390x844) nothing overflows sideways. Screenshots (PNG) are kept under the
// test's temp dir, whose path the test prints. `cluster list --credential`
// shows the same live facts; without --credential it says they are unknown.
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { FileStore } from "@tether/server";
import type { Browser, Page } from "playwright-core";
import t from "tap";
import { startClusters } from "../kube/index.js";
import { launchChromium } from "./chromium.js";
import { bindTetherAdmins, prepareMember, until } from "./fixture.js";
import { SERVER_BIN, spawnAgent, spawnServer } from "./tether-processes.js";

const run = promisify(execFile);
const HOSTILE_LABEL = `<img src=x onerror="document.title='owned'"><script>document.title='owned'</script>`;

const dir = await mkdtemp(join(tmpdir(), "tether-status-page-"));
// The screenshots stay for the reader; everything else goes.
const shots = join(dir, "screenshots");
await mkdir(shots);
const stateDir = join(dir, "state");
t.teardown(async () => {
  for (const sub of ["state", "sa", "agent"]) await rm(join(dir, sub), { recursive: true, force: true });
});

const set = await startClusters(1);
t.teardown(() => set.stop());
const member = set.clusters[0]!;

const store = await FileStore.open(stateDir);
const ca = await store.loadOrCreateCa();
const server = await spawnServer(stateDir, ca.certPem, join(dir, "server.log"));
t.teardown(() => server.proc.stop());
const credentialFile = join(stateDir, "admin-credential.json");
await until("serve wrote the admin credential", async () =>
  readFile(credentialFile, "utf8").then(
    () => true,
    () => false,
  ),
);
const { token } = JSON.parse(await readFile(credentialFile, "utf8")) as { token: string };
const cli = (...args: string[]) => run(process.execPath, [SERVER_BIN, ...args], { encoding: "utf8" });

// Two members through the admin API, as an operator would; one more label straight in the store, as
// kubectl edit on a Cluster object could put there: the page must show it as text.
await cli(
  "cluster",
  "add",
  "east",
  "--label",
  "region=eu-west",
  "--label",
  "tier=prod",
  "--credential",
  credentialFile,
);
await cli("cluster", "add", "west", "--label", "region=us-east", "--credential", credentialFile);
const west = (await store.getCluster("west"))!;
await store.putCluster({ ...west, labels: { ...west.labels, note: HOSTILE_LABEL } });

await bindTetherAdmins(member);
const agentDir = join(dir, "agent");
await mkdir(agentDir);
const env = await prepareMember(member, join(dir, "sa"));
const uid = (await store.getCluster("east"))!.uid;
const cert = await ca.issueClusterCertificate("east", { incarnation: uid });
await store.recordIssued(cert.serial, "east", cert.notAfter.toISOString());
const files = {
  caFile: join(agentDir, "ca.crt"),
  certFile: join(agentDir, "agent.crt"),
  keyFile: join(agentDir, "agent.key"),
};
await writeFile(files.caFile, ca.certPem);
await writeFile(files.certFile, cert.certPem);
await writeFile(files.keyFile, cert.keyPem!, { mode: 0o600 });
const agent = spawnAgent({
  server: server.url,
  ...files,
  env,
  serviceAccountDir: join(dir, "sa"),
  logFile: join(dir, "agent.log"),
});
t.teardown(() => agent.stop());

interface Listed {
  name: string;
  connection: {
    connected: boolean;
    rttMs?: number;
    agentVersion?: string;
    kubernetesVersion?: string;
  } | null;
}
const listRemote = async () =>
  (
    JSON.parse((await cli("cluster", "list", "-o", "json", "--credential", credentialFile)).stdout) as {
      clusters: Listed[];
    }
  ).clusters;
await until("east is connected with its versions and an RTT", async () => {
  agent.assertRunning();
  const east = (await listRemote()).find((c) => c.name === "east")?.connection;
  return Boolean(east?.connected && east.kubernetesVersion && east.rttMs !== undefined);
});

t.test("cluster list shows the live connection through the server, 'unknown' from the store", async (t) => {
  const clusters = await listRemote();
  t.match(clusters, [
    {
      name: "east",
      connection: {
        connected: true,
        agentVersion: /^\d+\.\d+\.\d+/,
        kubernetesVersion: /^v1\.\d+\.\d+/,
        rttMs: Number,
      },
    },
    { name: "west", connection: { connected: false } },
  ]);
  const table = (await cli("cluster", "list", "--credential", credentialFile)).stdout.trimEnd().split("\n");
  t.match(table[0], /^NAME +AUTH +LABELS +CONNECTED +RTT +AGENT +KUBERNETES +/);
  t.match(table[1], /^east +impersonate +region=eu-west,tier=prod +yes +[\d.]+ms +\d+\.\d+\.\d+\S* +v1\.\d+/);
  t.match(table[2], /^west +impersonate .* no +- +- +- +/);
  const local = (await cli("cluster", "list", "--state-dir", stateDir)).stdout.trimEnd().split("\n");
  t.match(
    local[1],
    /^east +impersonate +\S+ +unknown +unknown +unknown +unknown +/,
    "the store alone does not know",
  );
  const localJson = JSON.parse((await cli("cluster", "list", "-o", "json", "--state-dir", stateDir)).stdout);
  t.same(
    localJson.clusters.map((c: Listed) => c.connection),
    [null, null],
  );
});

t.test("headless Chromium renders /status", async (t) => {
  const browser: Browser = await launchChromium();
  t.teardown(() => browser.close());

  const anonymous = await browser.newContext({ ignoreHTTPSErrors: true });
  const refused = await anonymous.request.get(`${server.url}/status`);
  t.equal(refused.status(), 401, "without the admin token: 401");
  t.match(await refused.text(), /"kind":"Status"/, "a Status, not the page");
  t.match(refused.headers()["www-authenticate"], /Basic/, "which asks a browser for the token");
  await anonymous.close();

  const context = await browser.newContext({
    ignoreHTTPSErrors: true,
    extraHTTPHeaders: { authorization: `Bearer ${token}` },
    viewport: { width: 1280, height: 800 },
  });
  const page: Page = await context.newPage();
  const blocked: string[] = [];
  page.on("console", (m) => {
    if (/Content Security Policy|Refused/.test(m.text())) blocked.push(m.text());
  });
  const answer = await page.goto(`${server.url}/status`);
  t.equal(answer?.status(), 200);
  t.equal(await page.title(), "Tether status", "no label's script ran");

  const cards = await page.$$eval("article.cluster", (articles) =>
    articles.map((a) => ({
      name: (a as HTMLElement).dataset.cluster,
      connected: (a as HTMLElement).dataset.connected,
      state: a.querySelector("[data-field=state]")?.textContent,
      labels: Array.from(a.querySelectorAll(".labels li")).map((li) => li.textContent),
      fields: Object.fromEntries(
        Array.from(a.querySelectorAll("dd[data-field]")).map((d) => [
          (d as HTMLElement).dataset.field,
          d.textContent,
        ]),
      ),
    })),
  );
  t.same(
    cards.map((c) => c.name),
    ["east", "west"],
    "both clusters",
  );
  const [east, west] = cards;
  t.match(east, {
    connected: "true",
    state: "connected",
    labels: ["region=eu-west", "tier=prod"],
    fields: {
      "agent-version": /^\d+\.\d+\.\d+/,
      "kubernetes-version": /^v1\.\d+\.\d+/,
      rtt: /^[\d.]+ ms$/,
      streams: /^\d+$/,
      "bytes-rate": /^out \d[\d.]* \S+, in \d/,
      "connected-since": /\d{4}-\d\d-\d\d .*ago/,
    },
  });
  t.match(west, { connected: "false", state: "not connected", fields: { "last-error": "none" } });
  t.ok(west?.labels.includes(`note=${HOSTILE_LABEL}`), "the hostile label is shown as text");
  t.equal(await page.locator("script, img").count(), 0, "and made no element");
  const replica = await page.$$eval("#replica dd[data-field]", (dds) =>
    Object.fromEntries(dds.map((d) => [(d as HTMLElement).dataset.field, d.textContent])),
  );
  t.match(replica, { store: /^reachable/, draining: "no", sessions: "1", version: /^\d+\.\d+\.\d+/ });
  t.same(blocked, [], "the CSP blocked nothing the page uses (its stylesheet applies)");
  const styled = await page.$eval("article.cluster", (a) => getComputedStyle(a).borderLeftStyle);
  t.equal(styled, "solid", "the stylesheet applied under the CSP");
  const desktop = join(shots, "status-desktop.png");
  await page.screenshot({ path: desktop, fullPage: true });

  await context.close();

  // A phone, logging in as a person would: the browser answers the Basic challenge with the token.
  const phoneContext = await browser.newContext({
    ignoreHTTPSErrors: true,
    httpCredentials: { username: "admin", password: token },
    viewport: { width: 390, height: 844 },
    deviceScaleFactor: 2,
    isMobile: true,
    hasTouch: true,
  });
  const phonePage = await phoneContext.newPage();
  t.equal((await phonePage.goto(`${server.url}/status`))?.status(), 200, "Basic auth with the token: 200");
  t.equal(await phonePage.locator("article.cluster").count(), 2);
  const fit = await phonePage.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    widest: Math.max(
      ...Array.from(document.querySelectorAll("article.cluster")).map((a) => a.getBoundingClientRect().right),
    ),
  }));
  t.ok(
    fit.scrollWidth <= fit.innerWidth,
    `no horizontal overflow at 390 px (scrollWidth ${fit.scrollWidth})`,
  );
  t.ok(fit.widest <= fit.innerWidth, "every card fits the width");
  const phone = join(shots, "status-phone.png");
  await phonePage.screenshot({ path: phone, fullPage: true });
  t.comment(`screenshots: ${phone} and ${desktop}`);
  console.log(`status page screenshots: ${phone} ${desktop}`);
  await phoneContext.close();
});
