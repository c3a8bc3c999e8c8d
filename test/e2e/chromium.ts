// Headless Chromium for browser tests: Debian's `chromium` package, installed
// with apt-get when it is missing and the test runs as root (as CI does), and
// launched through playwright-core, which brings no browser of its own.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { type Browser, chromium } from "playwright-core";

export const CHROMIUM = "/usr/bin/chromium";

/** Installs Debian's chromium when it is missing; throws with what to do when it cannot. */
export function ensureChromium(): string {
  if (existsSync(CHROMIUM)) return CHROMIUM;
  if (process.getuid?.() !== 0) {
    throw new Error(
      `${CHROMIUM} is missing: install Debian's chromium package (apt-get install -y chromium)`,
    );
  }
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const install = () =>
    execFileSync("apt-get", ["install", "-y", "--no-install-recommends", "chromium"], {
      env,
      stdio: "inherit",
    });
  try {
    install();
  } catch {
    // A fresh machine may have no package lists yet.
    execFileSync("apt-get", ["update"], { env, stdio: "inherit" });
    install();
  }
  if (!existsSync(CHROMIUM)) throw new Error(`apt-get installed chromium but ${CHROMIUM} is not there`);
  return CHROMIUM;
}

/** A headless Chromium that makes no connection of its own (this network refuses them). */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: ensureChromium(),
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}
