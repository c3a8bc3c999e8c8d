// A member "apiserver" that records every byte a real agent forwards to it,
// so a test can prove what reached the member (smuggled requests, forwarded
// headers, group lines) — and that can answer what no apiserver would (a 101
// to a plain request).
import { createServer, type Server, type TLSSocket } from "node:tls";

export type FakeMemberMode = "normal" | "switch-always";

export class FakeMember {
  /** Everything received, per connection, in order. */
  readonly received: string[] = [];
  /** Each request head as it arrived, and whether its connection presented a client certificate. */
  readonly requests: { head: string; clientCertificate: boolean }[] = [];
  mode: FakeMemberMode = "normal";
  private readonly server: Server;
  private readonly sockets = new Set<TLSSocket>();

  constructor(cert: { certPem: string; keyPem: string; caPem: string }) {
    this.server = createServer(
      { cert: cert.certPem, key: cert.keyPem, ca: cert.caPem, requestCert: true, rejectUnauthorized: false },
      (socket) => this.serve(socket),
    );
  }

  async listen(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    const { port } = this.server.address() as { port: number };
    return `https://127.0.0.1:${port}`;
  }

  get all(): string {
    return this.received.join("");
  }

  private serve(socket: TLSSocket): void {
    this.sockets.add(socket);
    socket.on("close", () => this.sockets.delete(socket));
    socket.on("error", () => {});
    const clientCertificate = Boolean(socket.getPeerCertificate()?.subject);
    const index = this.received.push("") - 1;
    let pending = "";
    socket.on("data", (c: Buffer) => {
      const text = c.toString("latin1");
      this.received[index] += text;
      pending += text;
      // Answer each complete request head (bodies are not used by these tests).
      for (let end = pending.indexOf("\r\n\r\n"); end >= 0; end = pending.indexOf("\r\n\r\n")) {
        const head = pending.slice(0, end);
        pending = pending.slice(end + 4);
        this.requests.push({ head, clientCertificate });
        socket.write(this.answer(head));
      }
    });
  }

  private answer(_head: string): string {
    if (this.mode === "switch-always")
      return "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    // Like kube-apiserver for a path that does not upgrade: a normal, keep-alive response.
    const body = JSON.stringify({ major: "1", minor: "35", gitVersion: "v1.35.0-fake" });
    return `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
