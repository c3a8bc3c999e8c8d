import { Writable } from "node:stream";
import t from "tap";
import { createLogger, loggableHeaders, loggablePath } from "../src/logger.js";

function capture() {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  });
  return { log: createLogger({ level: "info" }, sink), lines };
}

t.test("secrets are redacted wherever they sit", async (t) => {
  const { log, lines } = capture();
  log.info(
    {
      token: "tether_secret1",
      headers: { authorization: "Bearer secret2", "impersonate-user": "secret3" },
      req: { headers: { authorization: "Bearer secret4" } },
      keyPem: "-----BEGIN PRIVATE KEY----- secret5",
    },
    "hello",
  );
  const out = lines.join("");
  for (const s of ["secret1", "secret2", "secret3", "secret4", "secret5"])
    t.notMatch(out, s, `${s} not logged`);
  t.match(out, /\[redacted\]/);
});

t.test("loggableHeaders drops credentials and impersonation", async (t) => {
  t.same(
    loggableHeaders({
      accept: "x",
      Authorization: "a",
      cookie: "c",
      "impersonate-extra-foo": "e",
      "Impersonate-Group": "g",
    }),
    { accept: "x" },
  );
});

t.test("loggablePath keeps the path and drops the query and fragment", async (t) => {
  t.equal(loggablePath("/clusters/m1/api/v1/pods?access_token=secret&watch=1"), "/clusters/m1/api/v1/pods");
  t.equal(loggablePath("/x#token=secret"), "/x");
  t.equal(loggablePath(undefined), "");
  const long = loggablePath(`/${"a".repeat(1000)}`);
  t.ok(long.length < 300, "bounded");
});
