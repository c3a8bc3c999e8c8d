// Headless Chromium for browser tests: Debian's `chromium` package, installed
// with apt-get when it is missing and the test runs as root (as CI does), and
// launched through playwright-core, which brings no browser of its own.
import { type Browser, chromium } from "playwright-core";
import { ensureDebianPackage } from "../tools/debian-package.js";

export const CHROMIUM = "/usr/bin/chromium";

/** Installs Debian's chromium when it is missing; throws with what to do when it cannot. */
export function ensureChromium(): string {
  ensureDebianPackage({ name: "chromium", provides: CHROMIUM, neededBy: "the browser tests" });
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
