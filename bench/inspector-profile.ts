/**
 * A CPU profile of a running Node process over a window of the bench's
 * choosing: SIGUSR1 opens the process's inspector (on 127.0.0.1:9229 unless
 * the process was started with another --inspect-port), then the DevTools
 * protocol's Profiler runs for `ms`. The result is a .cpuprofile that
 * cpu-profile-summary.ts reads. The connect phase before the window stays out
 * of it, which --cpu-prof (whole process life, written at exit) cannot do.
 */
import { writeFile } from "node:fs/promises";
import { WebSocket } from "ws";

async function debuggerUrl(port: number): Promise<string> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      const list = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as {
        webSocketDebuggerUrl: string;
      }[];
      if (list[0]) return list[0].webSocketDebuggerUrl;
    } catch {}
    if (Date.now() > deadline) throw new Error(`no inspector on 127.0.0.1:${port}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

type Call = (method: string, params?: object) => Promise<unknown>;

/** Runs `body` with a DevTools session on process `pid`, then closes its inspector again. */
async function withInspector<T>(pid: number, port: number, body: (call: Call) => Promise<T>): Promise<T> {
  process.kill(pid, "SIGUSR1");
  const ws = new WebSocket(await debuggerUrl(port));
  await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
  let id = 0;
  const pending = new Map<number, (result: unknown) => void>();
  ws.on("message", (data) => {
    const m = JSON.parse(String(data)) as { id?: number; result?: unknown };
    if (m.id !== undefined) pending.get(m.id)?.(m.result);
  });
  const call: Call = (method, params = {}) =>
    new Promise<unknown>((resolve) => {
      pending.set(++id, resolve);
      ws.send(JSON.stringify({ id, method, params }));
    });
  try {
    return await body(call);
  } finally {
    // Close the inspector again (no answer comes: the session ends with it); the process goes on as it was.
    ws.send(
      JSON.stringify({ id: ++id, method: "Runtime.evaluate", params: { expression: "process._debugEnd()" } }),
    );
    await new Promise((resolve) => ws.once("close", resolve));
  }
}

export async function profileFor(pid: number, ms: number, file: string, port = 9229): Promise<void> {
  await withInspector(pid, port, async (call) => {
    await call("Profiler.enable");
    await call("Profiler.setSamplingInterval", { interval: 1000 });
    await call("Profiler.start");
    await new Promise((r) => setTimeout(r, ms));
    const { profile } = (await call("Profiler.stop")) as { profile: unknown };
    await writeFile(file, JSON.stringify(profile));
  });
}

/** The value of `expression` evaluated in process `pid` (JSON-serialisable), e.g. to read its GC counters. */
export async function evaluateIn(pid: number, expression: string, port = 9229): Promise<unknown> {
  return withInspector(pid, port, async (call) => {
    const r = (await call("Runtime.evaluate", { expression, returnByValue: true })) as {
      result?: { value?: unknown };
      exceptionDetails?: { text?: string };
    };
    if (r.exceptionDetails) throw new Error(`evaluating in ${pid}: ${r.exceptionDetails.text ?? "failed"}`);
    return r.result?.value;
  });
}
