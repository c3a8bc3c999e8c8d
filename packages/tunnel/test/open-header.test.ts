import fc from "fast-check";
import t from "tap";
import { ErrorCode } from "../src/errors.js";
import {
  decodeOpenHeader,
  encodeOpenHeader,
  MAX_METADATA_ENTRIES,
  MAX_METADATA_VALUE,
  MAX_OPEN_HEADER,
} from "../src/open-header.js";

const service = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,62}$/);
const key = fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,20}$/);
const metadata = fc.dictionary(key, fc.string({ maxLength: 60 }), { maxKeys: 8 });

t.test("open headers round-trip", async (t) => {
  fc.assert(
    fc.property(service, metadata, (svc, meta) => {
      const decoded = decodeOpenHeader(encodeOpenHeader(svc, meta));
      if (typeof decoded === "string") throw new Error(decoded);
      if (decoded.service !== svc || JSON.stringify(decoded.metadata) !== JSON.stringify(meta)) {
        throw new Error("header differs after a round trip");
      }
    }),
    { numRuns: 300 },
  );
  t.pass("300 random headers round-tripped");
  t.same(decodeOpenHeader(encodeOpenHeader("kubernetes", { user: "ünïcødé ✓" })), {
    service: "kubernetes",
    metadata: { user: "ünïcødé ✓" },
  });
});

t.test("encoding refuses what a peer would refuse", async (t) => {
  const invalid = { code: ErrorCode.INVALID_ARGUMENT };
  t.throws(() => encodeOpenHeader(""), invalid);
  t.throws(() => encodeOpenHeader("has space"), invalid);
  t.throws(() => encodeOpenHeader("x".repeat(64)), invalid);
  t.throws(() => encodeOpenHeader("svc", { UPPER: "x" }), invalid);
  t.throws(() => encodeOpenHeader("svc", { __proto__x: "x" }), invalid);
  t.throws(() => encodeOpenHeader("svc", { k: 1 as unknown as string }), invalid);
  t.throws(() => encodeOpenHeader("svc", { k: "x".repeat(MAX_METADATA_VALUE + 1) }), invalid);
  const many = Object.fromEntries(Array.from({ length: MAX_METADATA_ENTRIES + 1 }, (_, i) => [`k${i}`, ""]));
  t.throws(() => encodeOpenHeader("svc", many), invalid);
  const big = Object.fromEntries(
    Array.from({ length: 8 }, (_, i) => [`k${i}`, "x".repeat(MAX_METADATA_VALUE)]),
  );
  t.throws(() => encodeOpenHeader("svc", big), invalid, `over ${MAX_OPEN_HEADER} bytes in total`);
});

t.test("decoding names what is wrong with a malformed header", async (t) => {
  const good = encodeOpenHeader("svc", { a: "1" });
  const cases: Array<[Buffer, RegExp]> = [
    [Buffer.alloc(0), /truncated/],
    [Buffer.from([3, 0x61]), /invalid service/],
    [Buffer.from([3, 0x20, 0x61, 0x62, 0]), /invalid service/],
    [Buffer.from([1, 0x61]), /truncated/],
    [Buffer.from([1, 0x61, 33]), /too many/],
    [Buffer.from([1, 0x61, 1]), /truncated/],
    [Buffer.from([1, 0x61, 1, 1, 0x41, 0, 0]), /invalid metadata key/],
    [Buffer.from([1, 0x61, 1, 1, 0x61]), /truncated/],
    [Buffer.from([1, 0x61, 1, 1, 0x61, 0xff, 0xff]), /too large/],
    [Buffer.from([1, 0x61, 1, 1, 0x61, 0, 2, 0x61]), /truncated/],
    [Buffer.from([1, 0x61, 1, 1, 0x61, 0, 1, 0xff]), /not UTF-8/],
    [Buffer.from([1, 0x61, 2, 1, 0x61, 0, 0, 1, 0x61, 0, 0]), /duplicate/],
    [Buffer.concat([good, Buffer.from([0])]), /trailing/],
    [Buffer.alloc(MAX_OPEN_HEADER + 1), /too large/],
  ];
  for (const [buf, reason] of cases) t.match(decodeOpenHeader(buf), reason, reason.source);
});

t.test("random bytes decode or are rejected, never throw", async (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      decodeOpenHeader(Buffer.from(bytes));
    }),
    { numRuns: 2000 },
  );
  t.pass();
});
