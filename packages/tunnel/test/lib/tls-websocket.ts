/**
 * A WebSocket pair over real TLS on loopback, as the agent and tether-server
 * run it, with a TCP relay between the two that reads the TLS record headers
 * going by (it cannot decrypt them): how many records each direction carried
 * and how long each was.
 */

import { execFileSync } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import https from "node:https";
import net, { type AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import type { Test } from "tap";
import { WebSocket, WebSocketServer } from "ws";
import { WEBSOCKET_OPTIONS } from "../../src/index.js";

let credentials: { key: Buffer; cert: Buffer } | undefined;

/** A self-signed certificate for 127.0.0.1, made once per process. */
function selfSigned(): { key: Buffer; cert: Buffer } {
  if (credentials !== undefined) return credentials;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tether-tls-test-"));
  try {
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-keyout",
        path.join(dir, "key.pem"),
        "-out",
        path.join(dir, "cert.pem"),
      ],
      { stdio: "ignore" },
    );
    credentials = {
      key: fs.readFileSync(path.join(dir, "key.pem")),
      cert: fs.readFileSync(path.join(dir, "cert.pem")),
    };
    return credentials;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The TLS records one direction of the relay saw: their lengths as sealed (plaintext + AEAD overhead). */
export class RecordTap {
  readonly lengths: number[] = [];
  private header = Buffer.alloc(0);
  private skip = 0;

  /** Forgets what was seen so far (e.g. the handshake). */
  reset(): void {
    this.lengths.length = 0;
  }

  feed(chunk: Buffer): void {
    let pos = 0;
    while (pos < chunk.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - pos);
        this.skip -= n;
        pos += n;
        continue;
      }
      const need = 5 - this.header.length;
      this.header = Buffer.concat([this.header, chunk.subarray(pos, pos + need)]);
      pos += Math.min(need, chunk.length - pos);
      if (this.header.length < 5) return;
      // type (1), legacy version (2), length (2): RFC 8446 5.1
      const length = this.header.readUInt16BE(3);
      this.lengths.push(length);
      this.skip = length;
      this.header = Buffer.alloc(0);
    }
  }
}

export interface TlsSockets {
  client: WebSocket;
  server: WebSocket;
  /** Records from the client to the server, and back. */
  toServer: RecordTap;
  toClient: RecordTap;
  /** Stops (true) or resumes (false) relaying client bytes: the client's writes back up, as on a slow link. */
  stallToServer(stalled: boolean): void;
}

/** A WebSocket client and server joined over TLS 1.3 through the record-reading relay. */
export async function tlsSockets(t: Test): Promise<TlsSockets> {
  const { key, cert } = selfSigned();
  const httpsServer = https.createServer({ key, cert, minVersion: "TLSv1.3" });
  const wss = new WebSocketServer({ server: httpsServer, ...WEBSOCKET_OPTIONS });
  httpsServer.listen(0, "127.0.0.1");
  await once(httpsServer, "listening");
  const target = (httpsServer.address() as AddressInfo).port;
  const toServer = new RecordTap();
  const toClient = new RecordTap();
  const relayed: net.Socket[] = [];
  const inbounds: net.Socket[] = [];
  const relay = net.createServer((inbound) => {
    const outbound = net.connect(target, "127.0.0.1");
    relayed.push(inbound, outbound);
    inbounds.push(inbound);
    inbound.on("data", (d: Buffer) => {
      toServer.feed(d);
      outbound.write(d);
    });
    outbound.on("data", (d: Buffer) => {
      toClient.feed(d);
      inbound.write(d);
    });
    inbound.on("end", () => outbound.end());
    outbound.on("end", () => inbound.end());
    inbound.on("error", () => outbound.destroy());
    outbound.on("error", () => inbound.destroy());
  });
  relay.listen(0, "127.0.0.1");
  await once(relay, "listening");
  const { port } = relay.address() as AddressInfo;
  const accepted = once(wss, "connection");
  const client = new WebSocket(`wss://127.0.0.1:${port}`, { ...WEBSOCKET_OPTIONS, ca: cert });
  await once(client, "open");
  const [server] = (await accepted) as [WebSocket];
  t.teardown(() => {
    client.terminate();
    server.terminate();
    for (const s of relayed) s.destroy();
    relay.close();
    wss.close();
    httpsServer.close();
  });
  const stallToServer = (stalled: boolean) => {
    for (const s of inbounds) {
      if (stalled) s.pause();
      else s.resume();
    }
  };
  return { client, server, toServer, toClient, stallToServer };
}

/** TLS 1.3 seals a record of n plaintext bytes as n + 1 (content type) + 16 (AES-GCM or ChaCha20 tag). */
export const TLS13_OVERHEAD = 17;
