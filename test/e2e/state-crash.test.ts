// Issue 5, must show: the state survives kill -9 at any moment. Admin
// commands are killed mid-operation in a loop; then the server starts on the
// same state dir and everything that was reported done is there.
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger, FileStore, TetherServer } from "@tether/server";
import t from "tap";
import { SERVER_BIN } from "./tether-processes.js";

const dir = await mkdtemp(join(tmpdir(), "tether-crash-"));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const stateDir = join(dir, "state");

function admin(args: string[], killAfterMs?: number): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [SERVER_BIN, ...args, "--state-dir", stateDir], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.resume();
    if (killAfterMs !== undefined) setTimeout(() => child.kill("SIGKILL"), killAfterMs);
    child.on("exit", (code) => resolve({ code, stdout }));
  });
}

t.test("kill -9 admin commands in a loop, then start the server and verify", async (t) => {
  const done = new Set<string>();
  let killed = 0;
  for (let i = 0; i < 20; i++) {
    // Three writers at once, each killed at a random moment of its run (or not at all).
    const names = [`a${i}`, `b${i}`, `c${i}`];
    const results = await Promise.all(
      names.map((name) =>
        admin(
          ["cluster", "add", name, "--server", "https://127.0.0.1:8443", "-o", "json"],
          Math.random() < 0.8 ? Math.floor(Math.random() * 600) : undefined,
        ),
      ),
    );
    results.forEach((r, j) => {
      if (r.code === 0) done.add(names[j]!);
      else killed++;
    });
  }
  t.comment(`${done.size} adds completed, ${killed} killed mid-run`);
  t.ok(killed > 0, "some commands were killed");

  const store = await FileStore.open(stateDir);
  const server = await TetherServer.start({
    store,
    host: "127.0.0.1",
    port: 0,
    log: createLogger({ level: "silent" }),
  });
  t.teardown(() => server.close());
  const listed = new Set((await store.listClusters()).map((c) => c.name));
  for (const name of done) t.ok(listed.has(name), `${name}, reported added, is there`);
  const ca = await store.loadOrCreateCa();
  t.match(ca.caHash, /^sha256:[0-9a-f]{64}$/, "one usable CA");
  const again = await admin([
    "cluster",
    "add",
    "after-crashes",
    "--server",
    "https://127.0.0.1:8443",
    "-o",
    "json",
  ]);
  t.equal(again.code, 0, "the state still takes writes");
  t.equal(JSON.parse(again.stdout).caHash, ca.caHash, "under the same CA");
  const list = await admin(["cluster", "list", "-o", "json"]);
  t.ok(
    (JSON.parse(list.stdout) as { clusters: { name: string }[] }).clusters.some(
      (c) => c.name === "after-crashes",
    ),
  );
});
