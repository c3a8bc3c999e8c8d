import { readFileSync } from "node:fs";
import t from "tap";
import { packageVersion } from "../src/package-version.js";

t.test("reads the version of the package one level above the asking module", async (t) => {
  const own = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")).version;
  t.equal(packageVersion(import.meta.url), own);
  t.equal(
    packageVersion(new URL("../../server/src/version.ts", import.meta.url).href),
    own,
    "server and common share the version",
  );
});
