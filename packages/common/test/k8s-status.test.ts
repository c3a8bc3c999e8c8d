import { createServer, request } from "node:http";
import type { AddressInfo } from "node:net";
import t from "tap";
import { sendStatus, statusBody, statusResponseHead } from "../src/k8s-status.js";

t.test("statusBody is a Kubernetes Status with the reason's code", async (t) => {
  t.same(JSON.parse(statusBody("Forbidden", "no")), {
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message: "no",
    reason: "Forbidden",
    code: 403,
  });
  t.same(JSON.parse(statusBody("TooManyRequests", "wait", 3)).details, { retryAfterSeconds: 3 });
  t.equal(JSON.parse(statusBody("TooManyRequests", "wait", 3)).code, 429);
});

t.test("statusResponseHead is a whole HTTP/1.1 response that closes the connection", async (t) => {
  const text = statusResponseHead("BadRequest", "bad upgrade", 2);
  const [head, body] = text.split("\r\n\r\n") as [string, string];
  t.match(head, /^HTTP\/1\.1 400 BadRequest\r\n/);
  t.match(head, /\r\nConnection: close(\r\n|$)/);
  t.match(head, /\r\nRetry-After: 2(\r\n|$)/);
  t.match(head, new RegExp(`\\r\\nContent-Length: ${Buffer.byteLength(body)}(\\r\\n|$)`));
  t.equal(JSON.parse(body).message, "bad upgrade");
});

t.test(
  "sendStatus answers with the code, a JSON body, Retry-After and WWW-Authenticate where they apply",
  async (t) => {
    const server = createServer((req, res) => {
      if (req.url === "/401") sendStatus(res, "Unauthorized", "who are you");
      else sendStatus(res, "TooManyRequests", "slow down", 5);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    t.teardown(() => server.close());
    const get = (path: string) =>
      new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((resolve, reject) => {
        const req = request(
          { port: (server.address() as AddressInfo).port, host: "127.0.0.1", path },
          (res) => {
            let body = "";
            res.setEncoding("utf8").on("data", (c) => (body += c));
            res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
          },
        );
        req.on("error", reject);
        req.end();
      });
    const unauthorized = await get("/401");
    t.equal(unauthorized.status, 401);
    t.equal(unauthorized.headers["www-authenticate"], 'Bearer realm="tether"');
    t.equal(JSON.parse(unauthorized.body).reason, "Unauthorized");
    const limited = await get("/429");
    t.equal(limited.status, 429);
    t.equal(limited.headers["retry-after"], "5");
    t.equal(limited.headers["content-type"], "application/json");
  },
);
