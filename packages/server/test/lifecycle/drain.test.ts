// Drain.track and trackUpgrade: what another replica forwarded over the hop
// is counted in this replica's drain without being refused, so the end of
// the drain waits for it (TetherServer's hop entry uses them). On a real
// HTTP server and real sockets.
import { createServer, request } from "node:http";
import { connect } from "node:net";
import { type Duplex, PassThrough } from "node:stream";
import t from "tap";
import { Drain } from "../../src/lifecycle/drain.js";

t.test("a tracked request is waited for, and never refused, during a drain", async (t) => {
  const drain = new Drain();
  const held: (() => void)[] = [];
  const server = createServer((req, res) => {
    drain.track(req, res);
    res.writeHead(200, { "content-type": "text/plain" });
    held.push(() => res.end("done"));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.teardown(() => server.close());
  const port = (server.address() as { port: number }).port;
  const get = () =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request({ host: "127.0.0.1", port, path: "/x" }, (res) => {
        let body = "";
        res.setEncoding("utf8").on("data", (d: string) => (body += d));
        res.once("end", () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.once("error", reject);
      req.end();
    });
  const first = get();
  await t.resolves(
    waitFor(() => held.length === 1),
    "the first request arrived",
  );
  drain.leave();
  drain.begin();
  const second = get();
  await t.resolves(
    waitFor(() => held.length === 2),
    "one tracked after the drain began is taken too",
  );
  t.equal(drain.inFlight, 2, "both count");
  let settled = false;
  const settle = drain.settle(60_000).then((cut) => {
    settled = true;
    return cut;
  });
  await new Promise((r) => setTimeout(r, 50));
  t.notOk(settled, "the drain waits for them");
  for (const end of held) end();
  t.same(
    await Promise.all([first, second]),
    [
      { status: 200, body: "done" },
      { status: 200, body: "done" },
    ],
    "both answered whole",
  );
  t.equal(await settle, 0, "and ends once they are answered, nothing cut");
});

t.test("a tracked upgrade counts until its socket closes", async (t) => {
  const drain = new Drain();
  const server = createServer();
  const sockets: Duplex[] = [];
  server.on("upgrade", (_req, socket) => {
    drain.trackUpgrade(socket);
    // As the upgrade relay does: the caller's end ends the relayed connection.
    socket.once("end", () => socket.destroy());
    sockets.push(socket);
    socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n");
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.teardown(() => server.close());
  const port = (server.address() as { port: number }).port;
  const client = connect(port, "127.0.0.1");
  client.on("error", () => {});
  client.write("GET /exec HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n");
  await t.resolves(
    waitFor(() => sockets.length === 1),
    "upgraded",
  );
  drain.begin();
  t.equal(drain.inFlight, 1, "the upgrade counts");
  const settle = drain.settle(30_000);
  client.destroy();
  t.equal(await settle, 0, "the drain ends when it closes");
});

t.test("while leaving, callers' upgrades are admitted and agents' refused", async (t) => {
  const drain = new Drain();
  drain.leave();
  t.ok(drain.active, "readiness is false from the start");
  const written: string[] = [];
  const fake = (): Duplex => {
    const s = new PassThrough();
    s.on("data", (d: Buffer) => written.push(d.toString()));
    return s;
  };
  t.ok(drain.admitUpgrade(fake(), true), "a caller's exec is served");
  t.equal(drain.inFlight, 1, "and counted");
  t.notOk(drain.admitUpgrade(fake(), false), "an agent's tunnel is refused");
  t.match(written.join(""), /^HTTP\/1\.1 503 /, "with 503");
  drain.begin();
  t.notOk(drain.admitUpgrade(fake(), true), "once draining, a caller's upgrade is refused too");
});

async function waitFor(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!cond()) throw new Error("not within 5 s");
}
