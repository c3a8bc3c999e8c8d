// What an agent's egress proxy URL is, for both sides that read one: the agent
// (--proxy, HTTPS_PROXY) and the manifest generator (--agent-proxy), so a
// value the generator writes is one the agent starts with. A problem is told
// without the value: the URL may hold the proxy's password.

export interface ProxyUrl {
  protocol: "http:" | "https:";
  hostname: string;
  port: number;
  /** `Basic …` from the URL's userinfo, if it has one. */
  authorization?: string;
  /** scheme://host:port — the only form of the proxy that is ever printed. */
  display: string;
}

/** A bare host:port means http://host:port, as in curl and Go. */
export function parseProxyUrl(raw: string): ProxyUrl | { problem: string } {
  const text = raw.trim();
  let url: URL;
  try {
    url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `http://${text}`);
  } catch {
    return { problem: "is not a URL: give http://[user:password@]host:port" };
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return {
      problem: `: a proxy URL is http:// or https://, not ${url.protocol}// (SOCKS is not supported)`,
    };
  }
  if (!url.hostname) return { problem: "names no proxy host" };
  const port = Number(url.port || (url.protocol === "https:" ? 443 : 80));
  const proxy: ProxyUrl = {
    protocol: url.protocol,
    hostname: url.hostname.replace(/^\[|\]$/g, ""),
    port,
    display: `${url.protocol}//${url.hostname}:${port}`,
  };
  if (url.username || url.password) {
    let credentials: string;
    try {
      credentials = `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`;
    } catch {
      // A bare "%" in the password: say how to write it, never what it was.
      return { problem: "has a user or password that is not percent-encoded: write % as %25" };
    }
    proxy.authorization = `Basic ${Buffer.from(credentials).toString("base64")}`;
  }
  return proxy;
}
