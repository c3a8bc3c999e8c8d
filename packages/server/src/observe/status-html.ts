// The status page as HTML: one self-contained document (inline CSS, no
// script, no image, no external asset) that reflows from a desktop to a
// phone and reloads itself. Every value from agents, admins or the store goes
// through `escapeHtml`; the only <style> is a constant whose hash is the
// page's whole style-src (STATUS_CSP).
import { createHash } from "node:crypto";
import type { ClusterView, StatusSnapshot } from "./status-model.js";

export const REFRESH_SECONDS = 10;

const CSS = `
:root{color-scheme:light dark;--bg:#f6f7f9;--card:#fff;--fg:#1b1f24;--muted:#5c6670;--line:#d8dde3;--up:#1a7f37;--down:#c62828}
@media (prefers-color-scheme:dark){:root{--bg:#0f1216;--card:#181c22;--fg:#e6e9ed;--muted:#98a2ad;--line:#2b323b;--up:#3fb950;--down:#f47067}}
*{box-sizing:border-box}
body{margin:0;padding:1rem;background:var(--bg);color:var(--fg);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
h1{font-size:1.35rem;margin:0}
h2{font-size:1.05rem;margin:1.4rem 0 .6rem}
h3{font-size:1rem;margin:0 0 .4rem;display:flex;flex-wrap:wrap;align-items:center;gap:.4rem}
.sub{color:var(--muted);margin:.2rem 0 0;font-size:.85rem}
.cards{display:grid;gap:.8rem;align-items:start;grid-template-columns:repeat(auto-fill,minmax(min(100%,21rem),1fr))}
.card{background:var(--card);border:1px solid var(--line);border-radius:.6rem;padding:.8rem .9rem;min-width:0}
.cluster.up{border-left:.3rem solid var(--up)}
.cluster.down{border-left:.3rem solid var(--down)}
.state{font-size:.8rem;font-weight:600;padding:.05rem .45rem;border-radius:1rem;border:1px solid currentColor}
.up .state,.ok{color:var(--up)}
.down .state,.bad{color:var(--down)}
.name{overflow-wrap:anywhere}
dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.15rem .8rem;margin:.3rem 0 0}
dt{color:var(--muted)}
dd{margin:0;overflow-wrap:anywhere;font-variant-numeric:tabular-nums}
.labels{display:flex;flex-wrap:wrap;gap:.3rem;list-style:none;padding:0;margin:0 0 .3rem}
.labels li{font-size:.8rem;background:var(--bg);border:1px solid var(--line);border-radius:.3rem;padding:0 .35rem;overflow-wrap:anywhere;max-width:100%}
.none{color:var(--muted)}
.auth{color:var(--muted);font-size:.8rem;font-weight:400}
footer{color:var(--muted);font-size:.8rem;margin-top:1.2rem}
`;

const CSS_HASH = createHash("sha256").update(CSS).digest("base64");

/** The page's Content-Security-Policy: nothing at all but that one stylesheet. */
export const STATUS_CSP = [
  "default-src 'none'",
  `style-src 'sha256-${CSS_HASH}'`,
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

const ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

export function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86_400)}d ${Math.floor((s % 86_400) / 3600)}h`;
}

export function formatRate(bytesPerSecond: number): string {
  const units = ["B/s", "KiB/s", "MiB/s", "GiB/s"];
  let value = bytesPerSecond;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value < 10 && unit > 0 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

const none = (text: string) => `<span class="none">${escapeHtml(text)}</span>`;

function time(iso: string): string {
  return `<time datetime="${escapeHtml(iso)}">${escapeHtml(iso.replace("T", " ").replace(/\.\d+Z$/, "Z"))}</time>`;
}

/** An ISO time and how long ago it was, as of `now`. */
function when(iso: string, now: number): string {
  return `${time(iso)} (${formatDuration((now - Date.parse(iso)) / 1000)} ago)`;
}

function field(name: string, label: string, html: string): string {
  return `<dt>${escapeHtml(label)}</dt><dd data-field="${name}">${html}</dd>`;
}

function clusterCard(c: ClusterView, now: number): string {
  const k = c.connection;
  const labels =
    c.labels === undefined
      ? `<p class="none">labels unknown: the store could not be read</p>`
      : Object.keys(c.labels).length === 0
        ? ""
        : `<ul class="labels">${Object.entries(c.labels)
            .map(([key, value]) => `<li>${escapeHtml(key)}=${escapeHtml(value)}</li>`)
            .join("")}</ul>`;
  const rows = k.connected
    ? [
        field("connected-since", "Connected since", when(k.connectedSince!, now)),
        field("rtt", "RTT", k.rttMs === undefined ? none("not measured yet") : `${escapeHtml(k.rttMs)} ms`),
        field("agent-version", "Agent", k.agentVersion ? escapeHtml(k.agentVersion) : none("unknown")),
        field(
          "kubernetes-version",
          "Kubernetes",
          k.kubernetesVersion ? escapeHtml(k.kubernetesVersion) : none("unknown"),
        ),
        field("streams", "Open streams", escapeHtml(k.openStreams ?? 0)),
        field("agents", "Agents", escapeHtml(k.agents ?? 0)),
        field(
          "bytes-rate",
          "Traffic",
          c.bytesPerSecond
            ? `out ${formatRate(c.bytesPerSecond.sentPerSecond)}, in ${formatRate(c.bytesPerSecond.receivedPerSecond)}`
            : none("unknown"),
        ),
        field(
          "agent-address",
          "Agent address",
          k.remoteAddress ? escapeHtml(k.remoteAddress) : none("unknown"),
        ),
      ]
    : [
        field(
          "disconnected-at",
          "Last seen",
          c.disconnectedAt ? when(c.disconnectedAt, now) : none("not connected since this replica started"),
        ),
      ];
  rows.push(
    field(
      "last-error",
      "Last error",
      c.lastError ? `${escapeHtml(c.lastError.message)} (${when(c.lastError.at, now)})` : none("none"),
    ),
  );
  const state = k.connected ? "connected" : "not connected";
  return (
    `<article class="card cluster ${k.connected ? "up" : "down"}" data-cluster="${escapeHtml(c.name)}" data-connected="${k.connected}">` +
    `<h3><span class="name">${escapeHtml(c.name)}</span><span class="state" data-field="state">${state}</span>` +
    (c.auth ? `<span class="auth">${escapeHtml(c.auth)}</span>` : "") +
    `</h3>${labels}<dl>${rows.join("")}</dl></article>`
  );
}

export function renderStatusPage(s: StatusSnapshot): string {
  const now = Date.parse(s.generatedAt);
  const r = s.replica;
  const store = r.store.reachable
    ? `<span class="ok">reachable</span> (${escapeHtml(r.store.where)})`
    : `<span class="bad">unreachable</span> (${escapeHtml(r.store.where)}): ${escapeHtml(r.store.error ?? "")}`;
  const replica = [
    field("store", "Store", store),
    field("uptime", "Uptime", `${formatDuration(r.uptimeSeconds)} (since ${time(r.startedAt)})`),
    field("version", "Version", escapeHtml(r.version)),
    field("draining", "Draining", r.draining ? `<span class="bad">yes, shutting down</span>` : "no"),
    field("sessions", "Agent sessions", escapeHtml(r.sessions)),
  ].join("");
  const connected = s.clusters.filter((c) => c.connection.connected).length;
  const cards =
    s.clusters.length === 0
      ? `<p class="none">No clusters registered. Add one with: tether-server cluster add NAME</p>`
      : `<div class="cards">${s.clusters.map((c) => clusterCard(c, now)).join("")}</div>`;
  return (
    `<!doctype html><html lang="en"><head><meta charset="utf-8">` +
    `<meta name="viewport" content="width=device-width, initial-scale=1">` +
    `<meta http-equiv="refresh" content="${REFRESH_SECONDS}">` +
    `<meta name="referrer" content="no-referrer">` +
    `<title>Tether status</title><style>${CSS}</style></head><body>` +
    `<header><h1>Tether status</h1><p class="sub">This replica's view at ${time(s.generatedAt)}; reloads every ${REFRESH_SECONDS} s.</p></header>` +
    `<h2>This replica</h2><section class="card" id="replica"><dl>${replica}</dl></section>` +
    `<h2>Clusters <span class="none">(${s.clusters.length} registered, ${connected} connected here)</span></h2>` +
    `<section id="clusters">${cards}</section>` +
    `<footer>Connected means an agent session on this replica. Machine-readable: ?format=json</footer>` +
    `</body></html>`
  );
}
