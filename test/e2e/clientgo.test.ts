// Issue 13: client-go itself (test/tools/clientgo, built from Go modules)
// against a Tether kubeconfig negotiates HTTP/2 as it does with the real
// apiserver, and runs a list, a watch and an informer through the tunnel,
// all over the one TCP connection it dialled.
import { execFile } from "node:child_process";
import t from "tap";
import { startClusters } from "../kube/index.js";
import { ensureGoTool } from "../tools/go-tool.js";
import { bindTetherAdmins, startTether } from "./fixture.js";

interface ClientGoRun {
  protocols: Record<string, number>;
  connections: number;
  listed: number;
  watchEvent: string;
  informerSynced: boolean;
  informerAdded: string;
}

function runClientGo(binary: string, kubeconfig: string, namespace: string): Promise<ClientGoRun> {
  return new Promise((resolve, reject) => {
    execFile(binary, [kubeconfig, namespace], { timeout: 120_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`clientgo failed: ${stderr || err.message}`));
      else resolve(JSON.parse(stdout) as ClientGoRun);
    });
  });
}

const set = await startClusters(1);
t.teardown(() => set.stop());
const member = set.clusters[0]!;
await bindTetherAdmins(member);
const tether = await startTether();
t.teardown(() => tether.stop());
await tether.registerCluster("m1");
await tether.startAgent("m1", member);
const binary = await ensureGoTool("clientgo");

for (const [how, namespace] of [
  ["direct", "clientgo-direct"],
  ["through Tether", "clientgo-tether"],
] as const) {
  t.test(`client-go ${how}: h2, list, watch, informer over one connection`, async (t) => {
    await member.api("POST", "/api/v1/namespaces", { metadata: { name: namespace } });
    const kubeconfig =
      how === "direct" ? member.kubeconfig : await tether.userKubeconfig("m1", "alice", ["admins"]);
    const run = await runClientGo(binary, kubeconfig, namespace);
    t.same(
      Object.keys(run.protocols),
      ["HTTP/2.0"],
      `every response was HTTP/2 (${JSON.stringify(run.protocols)})`,
    );
    t.ok((run.protocols["HTTP/2.0"] ?? 0) >= 4, "list, watch, creates and the informer's list and watch");
    t.equal(run.connections, 1, "one TCP connection for all of them");
    t.equal(typeof run.listed, "number", "the list returned items");
    t.equal(run.watchEvent, "ADDED clientgo-watched", "the watch saw the created ConfigMap");
    t.ok(run.informerSynced, "the informer synced");
    t.equal(run.informerAdded, "clientgo-informed", "the informer saw the next one");
  });
}
