// One bounded JSON request over HTTPS: the body parsed (undefined when it is
// not JSON), every status returned, transport failures and oversized answers
// rejected. The admin CLI's remote mode and the Kubernetes store use it; each
// turns statuses and failures into its own coded errors.
import { type RequestOptions, request } from "node:https";

export interface JsonAnswer<T = unknown> {
  status: number;
  body: T;
}

export function requestJson<T = unknown>(
  url: URL,
  options: RequestOptions & { timeout: number },
  body?: unknown,
  maxBytes = 16 << 20,
  contentType = "application/json",
): Promise<JsonAnswer<T>> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const headers = {
    accept: "application/json",
    ...options.headers,
    ...(payload === undefined
      ? {}
      : { "content-type": contentType, "content-length": Buffer.byteLength(payload) }),
  };
  return new Promise((resolve, reject) => {
    const req = request(url, { ...options, headers }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (chunk: Buffer) => {
        size += chunk.length;
        if (size > maxBytes) req.destroy(new Error(`the answer is larger than ${maxBytes} bytes`));
        else chunks.push(chunk);
      });
      res.on("error", reject);
      res.on("end", () => {
        let parsed: unknown;
        try {
          parsed = JSON.parse(Buffer.concat(chunks).toString("utf8"));
        } catch {
          parsed = undefined;
        }
        resolve({ status: res.statusCode ?? 0, body: parsed as T });
      });
    });
    req.on("timeout", () => req.destroy(new Error(`no answer within ${options.timeout / 1000}s`)));
    req.on("error", reject);
    req.end(payload);
  });
}
