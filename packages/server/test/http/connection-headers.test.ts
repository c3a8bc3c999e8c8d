import t from "tap";
import { stripConnectionHeaders } from "../../src/http/connection-headers.js";

t.test("connection-specific headers and those Connection names are stripped", async (t) => {
  const headers: Record<string, string | string[] | undefined> = {
    connection: "X-Hop, keep-alive",
    "x-hop": "1",
    "keep-alive": "timeout=5",
    "proxy-connection": "keep-alive",
    "transfer-encoding": "chunked",
    upgrade: "h2c",
    te: "trailers",
    "content-type": "application/json",
    "x-kept": "1",
  };
  stripConnectionHeaders(headers);
  t.same(headers, { "content-type": "application/json", "x-kept": "1" });
});

t.test("a Connection header given twice names headers in both", async (t) => {
  const headers: Record<string, string | string[] | undefined> = {
    connection: ["x-a", "x-b"],
    "x-a": "1",
    "x-b": "2",
    "x-c": "3",
  };
  stripConnectionHeaders(headers);
  t.same(headers, { "x-c": "3" });
});
