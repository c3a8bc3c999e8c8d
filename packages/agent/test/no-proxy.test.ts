// NO_PROXY matching: every entry form (*, names, .suffix, *.suffix, host:port,
// IPv4/IPv6 addresses with and without port, CIDR ranges), separators, case,
// trailing dots, and malformed entries that must match nothing.
import t from "tap";
import { parseNoProxy } from "../src/no-proxy.js";

type Case = [host: string, port: number, bypass: boolean];

const table: [noProxy: string | undefined, cases: Case[]][] = [
  [undefined, [["example.com", 443, false]]],
  ["", [["example.com", 443, false]]],
  [" , ,", [["example.com", 443, false]]],
  [
    "*",
    [
      ["example.com", 443, true],
      ["10.0.0.1", 1, true],
      ["::1", 443, true],
    ],
  ],
  // "*" anywhere in the list means everything.
  ["foo.com, *", [["bar.org", 443, true]]],
  // A name matches itself and its subdomains, not names that merely end the same.
  [
    "example.com",
    [
      ["example.com", 443, true],
      ["EXAMPLE.com", 443, true],
      ["example.com.", 443, true],
      ["a.example.com", 443, true],
      ["a.b.example.com", 8443, true],
      ["notexample.com", 443, false],
      ["example.com.evil.org", 443, false],
      ["example.org", 443, false],
      ["com", 443, false],
    ],
  ],
  // A leading dot, or "*.", matches subdomains only.
  [
    ".example.com",
    [
      ["example.com", 443, false],
      ["a.example.com", 443, true],
      ["notexample.com", 443, false],
    ],
  ],
  [
    "*.example.com",
    [
      ["example.com", 443, false],
      ["a.example.com", 443, true],
    ],
  ],
  // Case and a trailing dot in the entry are ignored.
  ["EXAMPLE.COM.", [["a.example.com", 443, true]]],
  // With a port, only that port.
  [
    "example.com:8443",
    [
      ["example.com", 8443, true],
      ["a.example.com", 8443, true],
      ["example.com", 443, false],
    ],
  ],
  [
    ".example.com:8443",
    [
      ["a.example.com", 8443, true],
      ["a.example.com", 443, false],
    ],
  ],
  // IPv4 address, with and without port; names are never resolved, and an address is not a suffix.
  [
    "10.1.2.3",
    [
      ["10.1.2.3", 443, true],
      ["10.1.2.4", 443, false],
      ["110.1.2.3", 443, false],
      ["x.10.1.2.3", 443, false],
    ],
  ],
  [
    "10.1.2.3:8443",
    [
      ["10.1.2.3", 8443, true],
      ["10.1.2.3", 443, false],
    ],
  ],
  // CIDR ranges.
  [
    "10.0.0.0/8",
    [
      ["10.0.0.0", 443, true],
      ["10.255.255.255", 443, true],
      ["11.0.0.0", 443, false],
      ["9.255.255.255", 443, false],
      ["ten.example", 443, false],
    ],
  ],
  [
    "192.168.1.0/24",
    [
      ["192.168.1.200", 443, true],
      ["192.168.2.1", 443, false],
    ],
  ],
  ["0.0.0.0/0", [["203.0.113.9", 443, true]]],
  [
    "fd00::/8",
    [
      ["fd12:3456::1", 443, true],
      ["[fd12:3456::1]", 443, true],
      ["fe80::1", 443, false],
      ["10.0.0.1", 443, false],
    ],
  ],
  ["10.0.0.0/8", [["fd00::1", 443, false]]],
  // IPv6 addresses, bare or bracketed, with a port only when bracketed.
  [
    "::1",
    [
      ["::1", 443, true],
      ["[::1]", 443, true],
      ["0:0:0:0:0:0:0:1", 443, true],
      ["::2", 443, false],
    ],
  ],
  [
    "[2001:db8::1]:8443",
    [
      ["2001:db8::1", 8443, true],
      ["2001:db8::1", 443, false],
    ],
  ],
  // Several entries, separated by commas and/or white space.
  [
    "localhost, .svc,10.96.0.0/12  tether.example.com",
    [
      ["localhost", 443, true],
      ["kubernetes.default.svc", 443, true],
      ["10.96.0.1", 443, true],
      ["tether.example.com", 8443, true],
      ["tether.example.org", 8443, false],
      ["127.0.0.1", 443, false],
    ],
  ],
  // Malformed entries match nothing (and do not stop the others from matching).
  [
    "10.0.0.0/33, ::1/129, /8, :443, ., *., example.com",
    [
      ["10.0.0.1", 443, false],
      ["::1", 443, false],
      ["a.b", 443, false],
      ["example.com", 443, true],
    ],
  ],
];

for (const [noProxy, cases] of table) {
  t.test(`NO_PROXY=${JSON.stringify(noProxy)}`, async (t) => {
    const rules = parseNoProxy(noProxy);
    for (const [host, port, bypass] of cases) {
      t.equal(rules.bypasses(host, port), bypass, `${host}:${port} ${bypass ? "direct" : "proxied"}`);
      t.equal(rules.bypasses(host, String(port)), bypass, "the port as a string too");
    }
  });
}

t.test("loopback is proxied unless NO_PROXY says otherwise (unlike Go, like curl)", async (t) => {
  t.equal(parseNoProxy("example.com").bypasses("127.0.0.1", 443), false);
  t.equal(parseNoProxy("example.com").bypasses("localhost", 443), false);
  t.equal(parseNoProxy("127.0.0.0/8").bypasses("127.0.0.1", 443), true);
});
