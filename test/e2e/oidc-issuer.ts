// A tiny OIDC issuer over real HTTPS for the OIDC tests: a discovery document,
// a JWKS whose keys the test rotates, and ID tokens signed by `jose` with any
// claims, key and kid the test chooses (expired, wrong audience, forged), which
// a real issuer such as an apiserver's TokenRequest would never hand out.
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, type JWK, type JWTPayload, SignJWT } from "jose";
import { createClusterPki } from "../kube/pki.js";

type Key = Awaited<ReturnType<typeof generateKeyPair>>;

export class TestIssuer {
  /** GETs of the JWKS so far. */
  jwksFetches = 0;
  /** While true, GET /jwks answers 500. */
  jwksDown = false;
  private readonly keys = new Map<string, Key>();
  private published: string[] = [];

  private constructor(
    private readonly server: Server,
    readonly url: string,
    readonly caPem: string,
  ) {}

  static async start(): Promise<TestIssuer> {
    const pki = await createClusterPki("oidc-issuer", "none");
    let issuer: TestIssuer | undefined;
    const server = createServer({ cert: pki.apiserver.certPem, key: pki.apiserver.keyPem }, (req, res) => {
      const self = issuer!;
      res.setHeader("content-type", "application/json");
      if (req.url === "/.well-known/openid-configuration") {
        res.end(
          JSON.stringify({
            issuer: self.url,
            jwks_uri: `${self.url}/jwks`,
            id_token_signing_alg_values_supported: ["ES256"],
          }),
        );
      } else if (req.url === "/jwks" && self.jwksDown) {
        res.statusCode = 500;
        res.end("{}");
      } else if (req.url === "/jwks") {
        self.jwksFetches++;
        void self.jwks().then((body) => res.end(JSON.stringify(body)));
      } else {
        res.statusCode = 404;
        res.end("{}");
      }
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as AddressInfo).port;
    issuer = new TestIssuer(server, `https://127.0.0.1:${port}`, pki.ca.certPem);
    return issuer;
  }

  /** A new signing key (not yet published). */
  async addKey(kid: string): Promise<void> {
    this.keys.set(kid, await generateKeyPair("ES256", { extractable: true }));
  }

  /** Which keys the JWKS lists from now on. */
  publish(...kids: string[]): void {
    this.published = kids;
  }

  /** What GET /jwks answers now. */
  jwksBody(): Promise<{ keys: JWK[] }> {
    return this.jwks();
  }

  private async jwks(): Promise<{ keys: JWK[] }> {
    const keys: JWK[] = [];
    for (const kid of this.published) {
      keys.push({ ...(await exportJWK(this.keys.get(kid)!.publicKey)), kid, alg: "ES256", use: "sig" });
    }
    return { keys };
  }

  /**
   * An ID token: `claims` over iss = this issuer, iat now and exp in an hour; signed with `signWith`'s key
   * (default `kid`'s) under the header kid `kid`.
   */
  async token(kid: string, claims: JWTPayload, signWith = kid): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ iss: this.url, iat: now, exp: now + 3600, ...claims })
      .setProtectedHeader({ alg: "ES256", kid, typ: "JWT" })
      .sign(this.keys.get(signWith)!.privateKey);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.closeAllConnections();
      this.server.close(() => resolve());
    });
  }
}
