// What reaches a member apiserver of who the caller is and where it came
// from, through the whole path (caller → tether-server → tunnel → agent): a
// fake apiserver (https, asking for a client certificate) records each
// request's raw header lines. Forged X-Forwarded-*/Forwarded/X-Real-Ip are
// replaced by the caller's real address in both modes; groups arrive as one
// Impersonate-Group line each; passthrough presents no agent certificate.
import "reflect-metadata";
import { once } from "node:events";
import { createServer as createHttpsServer } from "node:https";
import type { Socket } from "node:net";
import { type TLSSocket, connect as tlsConnect } from "node:tls";
import { TetherAgent } from "@tether/agent";
import { issueToken } from "@tether/server";
import t from "tap";
import { createClusterPki } from "../kube/pki.js";
import { type Fixture, startTether, TEST_TUNNEL, until } from "./fixture.js";

const pki = await createClusterPki("fake-member", "standin");
interface Seen {
  url: string;
  raw: string[];
  clientCert: boolean;
}
const seen: Seen[] = [];
const record = (req: { url?: string; rawHeaders: string[]; socket: unknown }) => {
  const cert = (req.socket as TLSSocket).getPeerCertificate?.() ?? {};
  seen.push({ url: req.url ?? "", raw: req.rawHeaders, clientCert: Object.keys(cert).length > 0 });
};
const apiserver = createHttpsServer(
  {
    key: pki.apiserver.keyPem,
    cert: pki.apiserver.certPem,
    requestCert: true,
    rejectUnauthorized: false,
  },
  (req, res) => {
    record(req);
    res.setHeader("content-type", "application/json");
    res.end("{}");
  },
);
apiserver.on("upgrade", (req, socket: Socket) => {
  record(req);
  socket.on("error", () => {});
  socket.end("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
});
await new Promise<void>((r) => apiserver.listen(0, "127.0.0.1", r));
t.teardown(() => apiserver.close());

const tether: Fixture = await startTether();
t.teardown(() => tether.stop());
for (const mode of ["impersonate", "passthrough"] as const) {
  const name = `fake-${mode}`;
  await tether.registerCluster(name, mode);
  const cert = await tether.ca.issueClusterCertificate(name);
  await tether.store.recordIssued(cert.serial, name, cert.notAfter.toISOString());
  const agent = new TetherAgent({
    server: tether.server.url,
    caPem: tether.ca.certPem,
    certPem: cert.certPem,
    keyPem: cert.keyPem!,
    target: {
      url: new URL(`https://127.0.0.1:${(apiserver.address() as { port: number }).port}`),
      tls: { ca: pki.ca.certPem, cert: pki.admin.certPem, key: pki.admin.keyPem },
      authorization: () => "Bearer agent-token",
      description: "fake apiserver",
    },
    tunnel: TEST_TUNNEL,
    backoff: { baseMs: 100, capMs: 1_000 },
  });
  agent.start();
  t.teardown(() => agent.stop());
  await agent.whenConnected();
}

const { token, hash } = issueToken();
await tether.store.addToken({
  hash,
  kind: "user",
  user: "carol",
  groups: ["g1", "g2", "g3"],
  clusters: ["fake-impersonate"],
  expiresAt: new Date(Date.now() + 3600_000).toISOString(),
});

async function send(text: string): Promise<string> {
  const sock = tlsConnect({
    host: "127.0.0.1",
    port: Number(new URL(tether.server.url).port),
    ca: tether.ca.certPem,
  });
  sock.on("error", () => {});
  await once(sock, "secureConnect");
  let got = "";
  sock.setEncoding("utf8");
  sock.on("data", (d: string) => {
    got += d;
  });
  sock.write(text);
  await Promise.race([once(sock, "close"), new Promise((r) => setTimeout(r, 5_000))]);
  sock.destroy();
  return got;
}

const values = (s: Seen | undefined, name: string) =>
  (s?.raw ?? []).filter((_v, i, a) => i % 2 === 1 && a[i - 1]!.toLowerCase() === name);
const FORGED =
  "X-Forwarded-For: 10.6.6.6\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: http\r\n" +
  "X-Forwarded-Port: 1\r\nForwarded: for=10.6.6.6\r\nX-Real-Ip: 10.6.6.6\r\n";

for (const mode of ["impersonate", "passthrough"] as const) {
  t.test(`${mode}: forged origin headers are replaced, groups stay apart`, async (t) => {
    const auth = mode === "impersonate" ? token : "member-token";
    for (const kind of ["plain", "upgrade"] as const) {
      const path = `/${kind}-${mode}`;
      const upgrade =
        kind === "upgrade" ? "Connection: Upgrade\r\nUpgrade: websocket\r\n" : "Connection: close\r\n";
      const answer = await send(
        `GET /clusters/fake-${mode}${path} HTTP/1.1\r\nHost: tether\r\nAuthorization: Bearer ${auth}\r\n${FORGED}${upgrade}\r\n`,
      );
      t.match(answer, kind === "plain" ? /^HTTP\/1\.1 200 / : /^HTTP\/1\.1 101 /, `${kind}: answered`);
      await until("the request reached the fake apiserver", () => seen.some((s) => s.url === path), 5_000);
      const s = seen.find((x) => x.url === path);
      t.same(
        values(s, "x-forwarded-for"),
        ["127.0.0.1"],
        `${kind}: X-Forwarded-For is the caller's real address`,
      );
      for (const name of [
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "forwarded",
        "x-real-ip",
      ]) {
        t.same(values(s, name), [], `${kind}: ${name} removed`);
      }
      if (mode === "impersonate") {
        t.same(values(s, "impersonate-user"), ["tether:carol"]);
        t.same(
          values(s, "impersonate-group"),
          ["tether:g1", "tether:g2", "tether:g3"],
          `${kind}: one line per group`,
        );
        t.equal(s?.clientCert, true, `${kind}: impersonate mode presents the agent's certificate`);
        t.same(values(s, "authorization"), ["Bearer agent-token"]);
      } else {
        t.equal(s?.clientCert, false, `${kind}: passthrough presents no client certificate`);
        t.same(values(s, "authorization"), ["Bearer member-token"], `${kind}: only the caller's token`);
      }
    }
  });
}
