// NO_PROXY: which destinations the agent dials directly although a proxy is
// set. The rules are Go's net/http/httpproxy ones (what kubectl and most
// cluster tooling follow), minus its exception for loopback addresses (curl
// proxies those too, and a proxy on the node may be the only way out):
//   *                  nothing is proxied
//   example.com        that host and every subdomain
//   .example.com       subdomains only (a leading "*." means the same)
//   host:port          only on that port (also for the forms above)
//   10.1.2.3, [::1]    that address (with :port, on that port)
//   10.0.0.0/8, fd00::/8  an address in the range
// Entries are separated by commas or white space; case and a trailing dot are
// ignored. Address entries match only a destination written as an address:
// nothing is resolved to decide.
import { BlockList, isIP } from "node:net";

interface DomainRule {
  /** Lower case, with a leading dot. */
  suffix: string;
  /** Whether the name without the dot matches too. */
  exact: boolean;
  port: string;
}

interface AddressRule {
  list: BlockList;
  port: string;
}

export interface NoProxy {
  /** Whether a connection to host:port goes direct. */
  bypasses(host: string, port: number | string): boolean;
}

function family(ip: string): "ipv4" | "ipv6" {
  return isIP(ip) === 6 ? "ipv6" : "ipv4";
}

/** "[::1]:80" → ["::1", "80"], "a.b:80" → ["a.b", "80"], "a.b" → ["a.b", ""]. */
function splitHostPort(entry: string): [string, string] {
  const bracketed = /^\[([^\]]*)\](?::(\d*))?$/.exec(entry);
  if (bracketed) return [bracketed[1]!, bracketed[2] ?? ""];
  if (isIP(entry) === 6) return [entry, ""];
  const m = /^(.*):(\d+)$/.exec(entry);
  return m ? [m[1]!, m[2]!] : [entry, ""];
}

function normalHost(host: string): string {
  return host
    .toLowerCase()
    .replace(/^\[|\]$/g, "")
    .replace(/\.$/, "");
}

export function parseNoProxy(value: string | undefined): NoProxy {
  const domains: DomainRule[] = [];
  const addresses: AddressRule[] = [];
  let all = false;
  for (const raw of (value ?? "").split(/[\s,]+/)) {
    const entry = raw.trim().toLowerCase();
    if (!entry) continue;
    if (entry === "*") {
      all = true;
      break;
    }
    const cidr = /^([^/]+)\/(\d{1,3})$/.exec(entry);
    if (cidr) {
      const ip = cidr[1]!.replace(/^\[|\]$/g, "");
      const bits = Number(cidr[2]);
      if (isIP(ip) && bits <= (isIP(ip) === 6 ? 128 : 32)) {
        const list = new BlockList();
        list.addSubnet(ip, bits, family(ip));
        addresses.push({ list, port: "" });
      }
      continue; // a malformed range matches nothing, as in Go
    }
    const [rawHost, port] = splitHostPort(entry);
    const host = normalHost(rawHost);
    if (!host) continue;
    if (isIP(host)) {
      const list = new BlockList();
      list.addAddress(host, family(host));
      addresses.push({ list, port });
      continue;
    }
    const name = host.startsWith("*.") ? host.slice(1) : host;
    if (name === ".") continue;
    domains.push({
      suffix: name.startsWith(".") ? name : `.${name}`,
      exact: !name.startsWith("."),
      port,
    });
  }
  return {
    bypasses(rawHost, rawPort) {
      if (all) return true;
      const host = normalHost(rawHost);
      const port = String(rawPort);
      const portOk = (p: string) => p === "" || p === port;
      if (isIP(host)) {
        const fam = family(host);
        if (addresses.some((a) => portOk(a.port) && a.list.check(host, fam))) return true;
      }
      return domains.some(
        (d) => portOk(d.port) && (host.endsWith(d.suffix) || (d.exact && host === d.suffix.slice(1))),
      );
    },
  };
}
