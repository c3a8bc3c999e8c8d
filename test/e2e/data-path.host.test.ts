// The data-path suite (data-path.test.ts) again with host routing: every
// kubeconfig names its member by tls-server-name <name>.<cluster domain> on
// the server's plain address, no /clusters/<name> path.
process.env.TETHER_TEST_ROUTING = "host";
await import("./data-path.test.js");
