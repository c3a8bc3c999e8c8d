// npm run kube -- up [--clusters N] [--json]
// Starts harness clusters and keeps them until interrupted.
import { Command, InvalidArgumentError } from "commander";
import { ensureBinaries } from "./binaries.js";
import { startClusters } from "./cluster.js";

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 16)
    throw new InvalidArgumentError("must be an integer from 1 to 16");
  return n;
}

const program = new Command("kube")
  .description(
    "Real Kubernetes clusters (kube-apiserver, controller manager, scheduler, etcd and a kubelet stand-in) for Tether's tests",
  )
  .showHelpAfterError();

program
  .command("up")
  .description("start clusters and keep them running until interrupted (Ctrl-C)")
  .option("--clusters <n>", "how many clusters", positiveInt, 1)
  .option("--json", "print one JSON line describing the clusters once all are ready")
  .action(async (opts: { clusters: number; json?: boolean }) => {
    const log = opts.json ? () => {} : (line: string) => console.error(line);
    const started = Date.now();
    const set = await startClusters(opts.clusters, { log });
    let stopping = false;
    const shutdown = async () => {
      if (stopping) return;
      stopping = true;
      await set.stop();
      process.exit(0);
    };
    for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
      process.removeAllListeners(signal);
      process.on(signal, () => void shutdown());
    }
    if (opts.json) {
      const clusters = set.clusters.map((c) => ({
        name: c.name,
        server: c.server,
        kubeconfig: c.kubeconfig,
      }));
      console.log(JSON.stringify({ clusters }));
    } else {
      console.log(
        `${set.clusters.length} cluster(s) ready in ${((Date.now() - started) / 1000).toFixed(1)}s ` +
          `(Kubernetes ${set.binaries.kubernetesVersion}, etcd ${set.binaries.etcdVersion}):`,
      );
      for (const c of set.clusters)
        console.log(`  ${c.name}  ${c.server}\n    kubectl --kubeconfig ${c.kubeconfig} get ns`);
      console.log(`kubectl: ${set.binaries.kubectl}\nPress Ctrl-C to stop and clean up.`);
    }
    // Keep the event loop alive until a signal arrives.
    setInterval(() => {}, 1 << 30);
  });

program
  .command("build")
  .description(
    "build (or find in the cache) kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, toxiproxy and the kubelet stand-in",
  )
  .action(async () => {
    const started = Date.now();
    const bins = await ensureBinaries((line) => console.error(line));
    console.log(
      `harness binaries ready in ${((Date.now() - started) / 1000).toFixed(1)}s: ` +
        `Kubernetes ${bins.kubernetesVersion}, etcd ${bins.etcdVersion}, in ${bins.dir}`,
    );
  });

program.parseAsync().catch((err: Error) => {
  console.error(`kube: ${err.message}`);
  process.exit(1);
});
