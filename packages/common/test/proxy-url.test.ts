import t from "tap";
import { parseProxyUrl } from "../src/proxy-url.js";

t.test("a proxy URL's parts", async (t) => {
  t.same(parseProxyUrl("http://proxy.corp:3128"), {
    protocol: "http:",
    hostname: "proxy.corp",
    port: 3128,
    display: "http://proxy.corp:3128",
  });
  t.match(parseProxyUrl("https://proxy.corp"), { protocol: "https:", port: 443 }, "https defaults to 443");
  t.match(
    parseProxyUrl(" proxy:3128 "),
    { protocol: "http:", hostname: "proxy", port: 3128 },
    "bare host:port is http",
  );
  t.match(parseProxyUrl("http://[::1]:8080"), { hostname: "::1", display: "http://[::1]:8080" });
  const withUser = parseProxyUrl("http://al%40corp:p%3Ass@proxy:3128");
  t.equal(
    (withUser as { authorization?: string }).authorization,
    `Basic ${Buffer.from("al@corp:p:ss").toString("base64")}`,
    "userinfo is decoded into Proxy-Authorization",
  );
  t.notMatch((withUser as { display: string }).display, /al|p%3Ass/, "display never holds the userinfo");
});

t.test("refused proxy URLs say why without the value", async (t) => {
  for (const raw of [
    "socks5://u:secret@proxy:1080",
    "http://u:secret@",
    "http://u:secret@proxy:99999",
    "http://u:sec%ret@proxy:3128",
  ]) {
    const parsed = parseProxyUrl(raw);
    t.ok("problem" in parsed, `${raw.replace("secret", "***")} is refused`);
    t.notMatch(JSON.stringify(parsed), /secret/, "the password is not echoed");
  }
  t.match(parseProxyUrl("socks5://proxy:1080"), { problem: /SOCKS is not supported/ });
  t.match(parseProxyUrl("http://u:50%@proxy:3128"), { problem: /write % as %25/ });
});
