import t from "tap";
import { CallerListener } from "../../src/http/caller-listener.js";
import { resolveLimits } from "../../src/http/limits.js";
import { createLogger } from "../../src/logger.js";
import { CertificateAuthority } from "../../src/pki/pki.js";

// tls.Server, unlike http.Server, leaves Nagle on by default: a response head flushed on its own then
// held its body back until the caller's delayed ACK (40 ms per small HTTP/1.1 GET, issue 13). Node keeps
// the option as the server's noDelay and applies it to every accepted socket.
t.test("the caller listener accepts connections with Nagle off", async (t) => {
  const ca = await CertificateAuthority.create();
  const cert = await ca.issueServerCertificate({ dnsNames: ["localhost"], ips: ["127.0.0.1"] });
  const listener = new CallerListener({
    cert: cert.certPem,
    key: cert.keyPem!,
    ca: ca.certPem,
    limits: resolveLimits(),
    log: createLogger({ level: "silent" }),
    request: () => {},
    upgrade: () => {},
  });
  t.equal((listener.server as unknown as { noDelay?: unknown }).noDelay, true);
});
