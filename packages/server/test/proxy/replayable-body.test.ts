// ReplayableBody ends the tunnel stream at once for a request the parser has
// seen whole (a GET: its end then leaves with its head, one tunnel message),
// and never for one still arriving or cut short: an early end would forward
// a truncated body as a whole one.
import { once } from "node:events";
import { createServer, type IncomingMessage, request } from "node:http";
import type { AddressInfo } from "node:net";
import { PassThrough } from "node:stream";
import t from "tap";
import { ReplayableBody } from "../../src/proxy/replayable-body.js";

/** A server handing each request to `onRequest` after `delayMs` (as admission's awaits do). */
async function serve(onRequest: (req: IncomingMessage) => void, delayMs: number) {
  const server = createServer((req, res) => {
    setTimeout(() => {
      onRequest(req);
      req.on("end", () => res.end("ok"));
      req.on("aborted", () => res.destroy());
    }, delayMs);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { server, port: (server.address() as AddressInfo).port };
}

function collect(dest: PassThrough): Promise<{ body: string; ended: boolean }> {
  return new Promise((resolve) => {
    let body = "";
    dest.setEncoding("utf8").on("data", (d: string) => (body += d));
    dest.on("end", () => resolve({ body, ended: true }));
    dest.on("close", () => resolve({ body, ended: false }));
  });
}

t.test("a GET the parser has seen whole ends the stream within pipeTo", async (t) => {
  let endedAtOnce: boolean | undefined;
  let result: Promise<{ body: string; ended: boolean }> | undefined;
  const { server, port } = await serve((req) => {
    const dest = new PassThrough();
    result = collect(dest);
    new ReplayableBody(req).pipeTo(dest);
    endedAtOnce = dest.writableEnded;
  }, 20);
  t.teardown(() => server.close());
  const req = request({ port, host: "127.0.0.1", path: "/", agent: false });
  req.end();
  const [res] = (await once(req, "response")) as [IncomingMessage];
  res.resume();
  await once(res, "end");
  t.equal(endedAtOnce, true, "ended before pipeTo returned");
  t.same(await result, { body: "", ended: true });
});

t.test("a body still arriving is passed on whole and ended only at its end", async (t) => {
  let endedAtOnce: boolean | undefined;
  let result: Promise<{ body: string; ended: boolean }> | undefined;
  const { server, port } = await serve((req) => {
    const dest = new PassThrough();
    result = collect(dest);
    new ReplayableBody(req).pipeTo(dest);
    endedAtOnce = dest.writableEnded;
  }, 0);
  t.teardown(() => server.close());
  const req = request({ port, host: "127.0.0.1", path: "/", method: "POST", agent: false });
  req.write("first ");
  await new Promise((r) => setTimeout(r, 50));
  req.end("second");
  const [res] = (await once(req, "response")) as [IncomingMessage];
  res.resume();
  t.equal(endedAtOnce, false, "not ended while the body was still coming");
  t.same(await result, { body: "first second", ended: true });
});

t.test("hostile: a body cut short is never ended as if whole", async (t) => {
  let result: Promise<{ body: string; ended: boolean }> | undefined;
  const seen = new Promise<void>((resolve) => {
    void serve((req) => {
      const dest = new PassThrough();
      result = collect(dest);
      // The body errors on abort; the stream is destroyed, never ended.
      req.on("error", () => {});
      new ReplayableBody(req).pipeTo(dest);
      resolve();
    }, 0).then(({ server, port }) => {
      t.teardown(() => server.close());
      const req = request({
        port,
        host: "127.0.0.1",
        path: "/",
        method: "POST",
        agent: false,
        headers: { "content-length": "100" },
      });
      req.on("error", () => {});
      req.write("only part of it");
      setTimeout(() => req.destroy(), 50);
    });
  });
  await seen;
  const outcome = await result!;
  t.equal(outcome.ended, false, "the stream was destroyed, not ended");
});
