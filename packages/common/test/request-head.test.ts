// The structured head codec (HEAD.md): heads survive any chunking with the
// body bytes behind them left in the stream; a peer cannot make the reader
// buffer past MAX_HEAD_BYTES (refused on the length prefix alone); a CR/LF in
// a name or value, a path that is not origin-form, a 1xx status or broken
// JSON is refused with ERR_TETHER_HEAD_INVALID on either side.
import { PassThrough } from "node:stream";
import t from "tap";
import {
  ERR_TETHER_HEAD_INVALID,
  ERR_TETHER_HEAD_TOO_LARGE,
  encodeRequestHead,
  encodeResponseHead,
  MAX_HEAD_BYTES,
  readRequestHead,
  readResponseHead,
} from "../src/request-head.js";

function framed(json: string): Buffer {
  const body = Buffer.from(json, "utf8");
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
}

async function rest(stream: PassThrough): Promise<string> {
  let out = "";
  stream.setEncoding("utf8");
  for await (const c of stream) out += c;
  return out;
}

t.test("a request head crosses in one-byte chunks and the body stays behind it", async (t) => {
  const head = {
    method: "POST",
    path: "/api/v1/namespaces/default/configmaps?fieldManager=kubectl",
    headers: [
      ["Impersonate-Group", "tether:a"],
      ["Impersonate-Group", "tether:b"],
      ["Content-Type", "application/json"],
    ] as [string, string][],
  };
  const bytes = Buffer.concat([encodeRequestHead(head), Buffer.from('{"kind":"ConfigMap"}')]);
  const stream = new PassThrough();
  const read = readRequestHead(stream);
  for (const b of bytes) stream.write(Buffer.from([b]));
  stream.end();
  t.same(await read, head);
  t.equal(await rest(stream), '{"kind":"ConfigMap"}', "the body is untouched");
});

t.test("a response head and its body arrive in one chunk", async (t) => {
  const stream = new PassThrough();
  stream.end(
    Buffer.concat([
      encodeResponseHead({ status: 200, headers: [["Content-Type", "text/plain"]] }),
      Buffer.from("ok"),
    ]),
  );
  t.same(await readResponseHead(stream), { status: 200, headers: [["Content-Type", "text/plain"]] });
  t.equal(await rest(stream), "ok");
});

t.test("an announced head larger than the bound is refused on its length alone", async (t) => {
  const stream = new PassThrough();
  const len = Buffer.alloc(4);
  len.writeUInt32BE(MAX_HEAD_BYTES + 1);
  stream.write(len);
  await t.rejects(readResponseHead(stream), { code: ERR_TETHER_HEAD_TOO_LARGE });
  const big = "x".repeat(MAX_HEAD_BYTES);
  t.throws(() => encodeRequestHead({ method: "GET", path: "/", headers: [["X-Big", big]] }), {
    code: ERR_TETHER_HEAD_TOO_LARGE,
  });
});

t.test("malformed heads are refused with a code, on encode and on read", async (t) => {
  const bad: [string, string][] = [
    ["not JSON", "{"],
    ["CR LF in a value", '{"method":"GET","path":"/","headers":[["X-A","a\\r\\nX-B: b"]]}'],
    ["colon in a name", '{"method":"GET","path":"/","headers":[["X-A:","a"]]}'],
    ["absolute URL", '{"method":"GET","path":"http://evil/","headers":[]}'],
    ["space in the path", '{"method":"GET","path":"/a b","headers":[]}'],
    ["space in the method", '{"method":"GET /x","path":"/","headers":[]}'],
    ["headers not a list", '{"method":"GET","path":"/","headers":{"a":"b"}}'],
  ];
  for (const [what, json] of bad) {
    const stream = new PassThrough();
    stream.end(framed(json));
    await t.rejects(readRequestHead(stream), { code: ERR_TETHER_HEAD_INVALID }, what);
  }
  for (const status of [101, 100, 99, 600, 200.5]) {
    const stream = new PassThrough();
    stream.end(framed(JSON.stringify({ status, headers: [] })));
    await t.rejects(readResponseHead(stream), { code: ERR_TETHER_HEAD_INVALID }, `status ${status}`);
  }
  t.throws(() => encodeRequestHead({ method: "GET", path: "/", headers: [["X-A", "a\r\nX-B: b"]] }), {
    code: ERR_TETHER_HEAD_INVALID,
  });
  t.throws(() => encodeResponseHead({ status: 101, headers: [] }), { code: ERR_TETHER_HEAD_INVALID });
});

t.test("a stream that ends inside the head is refused", async (t) => {
  const stream = new PassThrough();
  stream.end(framed('{"status":200,"headers":[]}').subarray(0, 10));
  await t.rejects(readResponseHead(stream), { code: ERR_TETHER_HEAD_INVALID });
});
