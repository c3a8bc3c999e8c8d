// The agent's structured-head path (HEAD.md) against a fake apiserver: the
// agent frames the body itself, so bytes hidden in a body never reach the
// apiserver as a second request on a kept-alive connection (chunked when no
// length is declared, held to the declared length otherwise); the auth mode
// is applied as on the raw path; a malformed or oversized head is answered
// with a Status and never forwarded.
import "reflect-metadata";
import { once } from "node:events";
import { createServer as createHttpsServer } from "node:https";
import { connect, createServer as createNetServer, type Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { encodeRequestHead, type RequestHead, readResponseHead } from "@tether/common";
import t from "tap";
import { Forwarder } from "../src/forwarder.js";
import type { KubeTarget } from "../src/kube-target.js";
import { makeCert } from "./lib/certs.js";

const ca = await makeCert({ cn: "fake-apiserver-ca", ca: true });
const serving = await makeCert({ cn: "fake-apiserver", issuer: ca, ip: "127.0.0.1" });
const agentCert = await makeCert({ cn: "agent-client", issuer: ca });

interface Seen {
  url: string;
  rawHeaders: string[];
  clientCert: boolean;
  body: string;
}
const seen: Seen[] = [];
const upstream = createHttpsServer(
  { key: serving.keyPem, cert: serving.certPem, requestCert: true, rejectUnauthorized: false },
  (req, res) => {
    const s: Seen = {
      url: req.url ?? "",
      rawHeaders: req.rawHeaders,
      clientCert: Object.keys((req.socket as TLSSocket).getPeerCertificate?.() ?? {}).length > 0,
      body: "",
    };
    seen.push(s);
    req.setEncoding("utf8");
    req.on("data", (d: string) => (s.body += d));
    req.on("end", () => {
      res.setHeader("content-type", "text/plain");
      res.end(`seen ${s.body.length}`);
    });
  },
);
await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
t.teardown(() => upstream.close());

const target: KubeTarget = {
  url: new URL(`https://127.0.0.1:${(upstream.address() as { port: number }).port}`),
  tls: { ca: ca.certPem, cert: agentCert.certPem, key: agentCert.keyPem },
  authorization: () => "Bearer agent-token",
  description: "fake apiserver",
};
const forwarder = new Forwarder(target);
t.teardown(() => forwarder.close());

// Stand-ins for tunnel streams: TCP connections carrying the open metadata, half-closed as a stream's FIN.
const entrances: Record<string, number> = {};
for (const auth of ["impersonate", "passthrough"] as const) {
  const srv = createNetServer({ allowHalfOpen: true }, (socket) => {
    (socket as unknown as { metadata: Record<string, string> }).metadata = { auth, head: "1" };
    forwarder.handle(socket);
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  entrances[auth] = (srv.address() as { port: number }).port;
  t.teardown(() => srv.close());
}

async function exchange(
  auth: "impersonate" | "passthrough",
  head: Buffer | RequestHead,
  body = "",
): Promise<{ status?: number; headers?: [string, string][]; body: string; error?: Error }> {
  const sock: Socket = connect(entrances[auth]!, "127.0.0.1");
  await once(sock, "connect");
  sock.on("error", () => {});
  sock.write(Buffer.isBuffer(head) ? head : encodeRequestHead(head));
  sock.end(body);
  try {
    const answer = await readResponseHead(sock);
    let text = "";
    sock.setEncoding("utf8");
    for await (const c of sock) text += c;
    return { ...answer, body: text };
  } catch (err) {
    return { body: "", error: err as Error };
  } finally {
    sock.destroy();
  }
}

const lastSeen = (url: string) => [...seen].reverse().find((s) => s.url === url);
const headerValues = (s: Seen | undefined, name: string) =>
  (s?.rawHeaders ?? []).filter((_v, i, a) => i % 2 === 1 && a[i - 1]!.toLowerCase() === name);
const hidden = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

t.test("a body without a declared length goes chunked: a request hidden in it is never parsed", async (t) => {
  for (const auth of ["impersonate", "passthrough"] as const) {
    const reply = await exchange(
      auth,
      {
        method: "GET",
        path: "/body",
        headers: [
          ["Authorization", "Bearer caller"],
          ["Impersonate-User", "tether:alice"],
        ],
      },
      hidden,
    );
    t.equal(reply.status, 200, `${auth}: answered`);
    t.equal(reply.body, `seen ${hidden.length}`, `${auth}: the whole body reached the apiserver as a body`);
    t.same(headerValues(lastSeen("/body"), "transfer-encoding"), ["chunked"], `${auth}: framed as chunked`);
  }
  // A second request on a kept-alive upstream connection would arrive right behind the first.
  await new Promise((r) => setTimeout(r, 300));
  t.equal(lastSeen("/smuggled"), undefined, "the hidden request was never parsed as one");
});

t.test("a body longer than its declared length is cut, never passed on", async (t) => {
  const reply = await exchange(
    "impersonate",
    {
      method: "POST",
      path: "/short",
      headers: [
        ["Impersonate-User", "tether:alice"],
        ["Content-Length", "2"],
      ],
    },
    `ab${hidden}`,
  );
  t.not(reply.status, 200, "no success for a body that lied about its length");
  await new Promise((r) => setTimeout(r, 300));
  t.equal(lastSeen("/smuggled"), undefined, "the bytes past the length were never parsed as a request");
  const bad = await exchange("impersonate", {
    method: "POST",
    path: "/short",
    headers: [
      ["Impersonate-User", "tether:alice"],
      ["Content-Length", "1, 2"],
    ],
  });
  t.equal(bad.status, 400, "a Content-Length that is not one number is refused");
});

t.test("GET without a body is sent without framing; the auth modes apply as on the raw path", async (t) => {
  const imp = await exchange("impersonate", {
    method: "GET",
    path: "/imp?x=1",
    headers: [
      ["Authorization", "Bearer caller"],
      ["Impersonate-User", "tether:alice"],
      ["Impersonate-Group", "tether:a"],
      ["Impersonate-Group", "tether:b"],
    ],
  });
  t.equal(imp.status, 200);
  const s = lastSeen("/imp?x=1");
  t.same(headerValues(s, "transfer-encoding"), [], "no body, no framing");
  t.same(headerValues(s, "authorization"), ["Bearer agent-token"], "the caller's Authorization is replaced");
  t.same(headerValues(s, "impersonate-group"), ["tether:a", "tether:b"], "one line per group");
  t.equal(s?.clientCert, true);

  const pass = await exchange("passthrough", {
    method: "GET",
    path: "/pass",
    headers: [["Authorization", "Bearer caller"]],
  });
  t.equal(pass.status, 200);
  t.same(headerValues(lastSeen("/pass"), "authorization"), ["Bearer caller"]);
  t.equal(lastSeen("/pass")?.clientCert, false, "passthrough: no client certificate");

  const none = await exchange("impersonate", { method: "GET", path: "/none", headers: [] });
  t.equal(none.status, 400, "impersonate mode without Impersonate-User is refused");
  t.equal(lastSeen("/none"), undefined);
});

t.test("a malformed or oversized head gets a Status and reaches nobody", async (t) => {
  const json = Buffer.from('{"method":"GET","path":"/evil","headers":[["X-A","a\\r\\nX-B: b"]]}');
  const len = Buffer.alloc(4);
  len.writeUInt32BE(json.length);
  const bad = await exchange("passthrough", Buffer.concat([len, json]));
  t.equal(bad.status, 400);
  t.match(JSON.parse(bad.body), { kind: "Status", code: 400, message: /malformed head/ });
  const huge = Buffer.alloc(4);
  huge.writeUInt32BE(0xffffffff);
  const big = await exchange("passthrough", huge);
  t.equal(big.status, 400, "refused on the length prefix alone");
  t.equal(lastSeen("/evil"), undefined);
});
