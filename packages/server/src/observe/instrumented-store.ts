// A Store that times every operation of the one it wraps and counts those
// that fail, whichever store it is (FileStore, KubeStore): one decorator
// instead of timing code in each store.
import type { Store } from "../store/state-store.js";
import type { TetherMetrics } from "./metrics.js";

type Operation = {
  [K in keyof Store]-?: Store[K] extends (...args: never[]) => Promise<unknown> ? K : never;
}[keyof Store];

/** Every asynchronous operation of Store: the type fails to check when one is added and not listed. */
const OPERATIONS = [
  "loadOrCreateCa",
  "loadOrCreateServingCertificate",
  "listClusters",
  "getCluster",
  "putCluster",
  "addCluster",
  "deleteCluster",
  "addToken",
  "findToken",
  "consumeJoinToken",
  "recordIssued",
  "revokeCluster",
  "isRevoked",
  "changeMark",
  "sessionRecords",
  "listTokens",
  "deleteToken",
  "serverUrl",
  "recordServerUrl",
  "adminCredential",
  "saveAdminCredential",
] as const satisfies readonly Operation[];
type Listed = (typeof OPERATIONS)[number];
// Compile-time: every Operation is listed.
const _complete: Operation extends Listed ? true : never = true;
void _complete;

export function instrumentStore(store: Store, metrics: TetherMetrics): Store {
  const wrapped = new Map<PropertyKey, unknown>();
  for (const operation of OPERATIONS) {
    const labels = { operation };
    wrapped.set(operation, async (...args: unknown[]) => {
      const end = metrics.storeDuration.startTimer(labels);
      try {
        // Looked up per call: the wrapped store's methods may be replaced later (tests do).
        const fn = store[operation] as (...args: unknown[]) => Promise<unknown>;
        return await fn.apply(store, args);
      } catch (err) {
        metrics.storeErrors.inc(labels);
        throw err;
      } finally {
        end();
      }
    });
  }
  return new Proxy(store, {
    get(target, prop) {
      if (wrapped.has(prop)) return wrapped.get(prop);
      const value = Reflect.get(target, prop, target) as unknown;
      // Methods run on the store itself: private fields do not resolve through a Proxy.
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}
