// The one rule for a request path to an exposed service, checked by the
// server before anything normalises it (http-proxy's WHATWG URL parsing would
// resolve "%2e%2e" and "\" quietly) and again by the agent, which is what
// keeps the service's base path: an origin-form path with no dot segment in
// any of a few rounds of percent-decoding.

/** Rounds of percent-decoding looked through: a service that decodes twice still sees no dot segment. */
const DECODE_ROUNDS = 3;

/** Why `path` (without its query) may not go to an exposed service, or undefined when it may. */
export function servicePathRefusal(path: string): string | undefined {
  if (!path.startsWith("/")) return "must be a path starting with /, not an absolute URL or *";
  if (path.startsWith("//")) return "may not start with //";
  let text = path;
  for (let round = 0; round <= DECODE_ROUNDS; round++) {
    // Backslashes: some servers take them for slashes; "..;x": some take path parameters off a segment.
    for (const segment of text.split(/[/\\]/)) {
      const bare = segment.split(";")[0];
      if (bare === "." || bare === "..") return "may not contain . or .. segments";
    }
    if (/\p{Cc}/u.test(text)) return "may not contain control characters";
    if (!text.includes("%")) return undefined;
    try {
      text = decodeURIComponent(text);
    } catch {
      return "is not valid percent-encoding";
    }
  }
  return undefined;
}
