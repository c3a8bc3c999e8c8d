/**
 * The scale bench's watch source (scale-watches.ts), a process of its own: an
 * HTTPS server (HTTP/2 and HTTP/1.1, as kube-apiserver) that answers any GET
 * with `watch=true` in its query as a watch — 200, chunked application/json,
 * one real watch event per line — and holds it open. On the parent's
 * {type: "emit", seq} it writes one ADDED ConfigMap event to every open
 * watch, its send time (ms since the epoch, fractional) in an annotation, so
 * the reader's latency needs no clock of ours beyond the machine's. It tells
 * the parent how many watches are open every 100 ms.
 */
import { createSecureServer } from "node:http2";
import type { ServerResponse } from "node:http";

export type ToSource =
  | { type: "config"; certPem: string; keyPem: string }
  | { type: "emit"; seq: number }
  | { type: "stop" };
export type FromSource = { type: "listening"; port: number } | { type: "open"; watches: number };

export const SENT_ANNOTATION = "bench.tether.dev/sent-ms";

const open = new Set<ServerResponse>();

function event(seq: number): string {
  const object = {
    kind: "ConfigMap",
    apiVersion: "v1",
    metadata: {
      name: `ev-${seq}`,
      namespace: "bench-watch",
      resourceVersion: String(1000 + seq),
      annotations: { [SENT_ANNOTATION]: String(performance.timeOrigin + performance.now()) },
    },
    data: { seq: String(seq) },
  };
  return `${JSON.stringify({ type: "ADDED", object })}\n`;
}

function start(certPem: string, keyPem: string): void {
  const server = createSecureServer(
    {
      cert: certPem,
      key: keyPem,
      allowHTTP1: true,
      // As kube-apiserver's Go default; the bench's client opens a connection per 250 watches.
      settings: { maxConcurrentStreams: 250 },
    },
    (req, res) => {
      const r = res as unknown as ServerResponse;
      if (req.url === "/version") {
        r.writeHead(200, { "content-type": "application/json" });
        r.end(JSON.stringify({ major: "1", minor: "34", gitVersion: "v1.34.0-watch-source" }));
        return;
      }
      if (!/[?&]watch=(true|1)\b/.test(req.url ?? "")) {
        r.writeHead(404, { "content-type": "application/json" });
        r.end("{}");
        return;
      }
      r.writeHead(200, { "content-type": "application/json", "cache-control": "no-cache, private" });
      // The head goes out now, as the apiserver flushes it before the first event.
      r.flushHeaders();
      open.add(r);
      r.once("close", () => open.delete(r));
    },
  );
  server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as { port: number }).port;
    process.send?.({ type: "listening", port } satisfies FromSource);
  });
}

setInterval(() => process.send?.({ type: "open", watches: open.size } satisfies FromSource), 100).unref();

process.on("message", (m: ToSource) => {
  if (m.type === "config") start(m.certPem, m.keyPem);
  else if (m.type === "emit") for (const r of open) r.write(event(m.seq));
  else process.exit(0);
});
process.on("disconnect", () => process.exit(0));
