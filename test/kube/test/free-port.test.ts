// freePort draws below the kernel's ephemeral range, where outgoing connections never take a port
// between the draw and the bind (a parallel suite lost an apiserver start to "address already in use").
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import t from "tap";
import { freePort } from "../cluster.js";

const [low] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);

t.test("ports come from below the ephemeral range and can be listened on", async (t) => {
  const ports = new Set<number>();
  for (let i = 0; i < 20; i++) {
    const port = await freePort();
    t.ok(port >= 1024 && port < low!, `${port} is below ${low}`);
    ports.add(port);
    await new Promise<void>((resolve, reject) => {
      const srv = createServer();
      srv.once("error", reject);
      srv.listen(port, "127.0.0.1", () => srv.close(() => resolve()));
    });
  }
  t.ok(ports.size > 1, `drawn at random (${ports.size} distinct of 20)`);
});

t.test("a port some listener holds is not handed out", async (t) => {
  const held = await freePort();
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(held, "127.0.0.1", () => resolve()));
  t.teardown(() => srv.close());
  for (let i = 0; i < 200; i++) t.not(await freePort(), held);
});
