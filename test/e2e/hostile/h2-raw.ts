// A hostile HTTP/2 client that writes frames by hand over node:tls, for what
// node:http2's client refuses to do: open streams beyond the server's
// SETTINGS_MAX_CONCURRENT_STREAMS, send a header block larger than the
// server allows, reset streams as fast as it opens them (CVE-2023-44487).
// Header blocks are HPACK literals without indexing or Huffman; what comes
// back is read at the frame level only (which streams got HEADERS, which were
// reset with which code, the GOAWAY).
import { connect, type TLSSocket } from "node:tls";

export const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, CONTINUATION: 9 };
export const H2_ERROR = {
  NO_ERROR: 0,
  PROTOCOL_ERROR: 1,
  REFUSED_STREAM: 7,
  CANCEL: 8,
  COMPRESSION_ERROR: 9,
  ENHANCE_YOUR_CALM: 11,
};
const END_STREAM = 0x1;
const END_HEADERS = 0x4;
const ACK = 0x1;

export interface H2Target {
  host: string;
  port: number;
  caPem: string;
}

function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

function hpackInt(value: number, prefixBits: number, flags: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [flags | value];
  const out = [flags | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return out;
}

/** A header block of literal fields without indexing (RFC 7541 6.2.2), names and values as plain strings. */
export function headerBlock(headers: [string, string][]): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of headers) {
    const n = Buffer.from(name);
    const v = Buffer.from(value);
    parts.push(Buffer.from([0x00, ...hpackInt(n.length, 7, 0)]), n, Buffer.from(hpackInt(v.length, 7, 0)), v);
  }
  return Buffer.concat(parts);
}

export class RawH2 {
  /** Streams whose response HEADERS arrived. */
  readonly answered = new Set<number>();
  /** Streams the server reset, with the code. */
  readonly resets = new Map<number, number>();
  goaway: number | undefined;
  closed = false;
  /** Resolves once the server has our ACK of its SETTINGS (a PING sent after the ACK came back): its limits apply. */
  readonly settled: Promise<void>;
  private onSettled: () => void = () => {};
  private buffer = Buffer.alloc(0);
  private nextStream = 1;
  readonly socket: TLSSocket;

  private constructor(socket: TLSSocket) {
    this.socket = socket;
    this.settled = new Promise((resolve) => {
      this.onSettled = resolve;
    });
    socket.on("data", (chunk: Buffer) => this.read(chunk));
    socket.on("error", () => {});
    socket.once("close", () => {
      this.closed = true;
    });
  }

  static open(target: H2Target): Promise<RawH2> {
    return new Promise((resolve, reject) => {
      const socket = connect({
        host: target.host,
        port: target.port,
        ca: target.caPem,
        servername: "localhost",
        ALPNProtocols: ["h2"],
      });
      socket.once("error", reject);
      socket.once("secureConnect", () => {
        socket.off("error", reject);
        if (socket.alpnProtocol !== "h2") {
          socket.destroy();
          reject(new Error(`server chose ${String(socket.alpnProtocol)}, not h2`));
          return;
        }
        socket.write(Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        socket.write(frame(FRAME.SETTINGS, 0, 0));
        resolve(new RawH2(socket));
      });
    });
  }

  private read(chunk: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    while (this.buffer.length >= 9) {
      const length = this.buffer.readUIntBE(0, 3);
      if (this.buffer.length < 9 + length) return;
      const type = this.buffer[3]!;
      const flags = this.buffer[4]!;
      const stream = this.buffer.readUInt32BE(5) & 0x7fffffff;
      const payload = this.buffer.subarray(9, 9 + length);
      this.buffer = this.buffer.subarray(9 + length);
      if (type === FRAME.SETTINGS && !(flags & ACK)) {
        this.write(frame(FRAME.SETTINGS, ACK, 0));
        this.write(frame(FRAME.PING, 0, 0, Buffer.alloc(8)));
      } else if (type === FRAME.PING && flags & ACK) this.onSettled();
      else if (type === FRAME.PING) this.write(frame(FRAME.PING, ACK, 0, payload));
      else if (type === FRAME.HEADERS) this.answered.add(stream);
      else if (type === FRAME.RST_STREAM) this.resets.set(stream, payload.readUInt32BE(0));
      else if (type === FRAME.GOAWAY) this.goaway = payload.readUInt32BE(4);
    }
  }

  private write(data: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(data);
  }

  /**
   * Opens a stream with `headers` (pseudo-headers first), split into CONTINUATION frames of 16 KiB;
   * returns its id. Without `endHeaders` the block is left open, as a slowloris would.
   */
  request(headers: [string, string][], endStream = true, endHeaders = true): number {
    const id = this.nextStream;
    this.nextStream += 2;
    const block = headerBlock(headers);
    const max = 16_384;
    const chunks: Buffer[] = [];
    for (let i = 0; i < block.length || chunks.length === 0; i += max)
      chunks.push(block.subarray(i, i + max));
    chunks.forEach((c, i) => {
      const last = i === chunks.length - 1;
      const flags = (last && endHeaders ? END_HEADERS : 0) | (i === 0 && endStream ? END_STREAM : 0);
      this.write(frame(i === 0 ? FRAME.HEADERS : FRAME.CONTINUATION, flags, id, c));
    });
    return id;
  }

  reset(stream: number, code = H2_ERROR.CANCEL): void {
    const payload = Buffer.alloc(4);
    payload.writeUInt32BE(code);
    this.write(frame(FRAME.RST_STREAM, 0, stream, payload));
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** A GET's header block for `path` with a bearer token. */
export function getHeaders(path: string, token: string): [string, string][] {
  return [
    [":method", "GET"],
    [":scheme", "https"],
    [":authority", "localhost"],
    [":path", path],
    ["authorization", `Bearer ${token}`],
  ];
}
