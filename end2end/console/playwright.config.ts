import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { defineConfig, devices } from "@playwright/test";

// The server under test: `oxiscale serve` with a fresh data directory. scripts/test sets
// OXISCALE_E2E_SERVER_CMD / OXISCALE_E2E_BASE_URL / OXISCALE_E2E_DATA_DIR / OXISCALE_E2E_BIN;
// the defaults below are for a run by hand after `cargo build -p server` and
// scripts/build-site.sh. tests/fixtures.ts creates the test administrator with the CLI, which
// finds the server's socket in the data directory.
const baseURL = process.env.OXISCALE_E2E_BASE_URL ?? "http://127.0.0.1:3000";
const port = new URL(baseURL).port || "80";
// Set once in the runner; the workers inherit it (they evaluate this file again).
process.env.OXISCALE_E2E_DATA_DIR ??= mkdtempSync(path.join(tmpdir(), "oxcon-"));
process.env.OXISCALE_E2E_BIN ??= path.resolve(
  __dirname,
  "../..",
  process.env.CARGO_TARGET_DIR ?? "target",
  "debug/oxiscale",
);
// The OpenID provider the device-login tests sign in at (end2end/oidc/provider.mjs, a real
// oidc-provider process). Its issuer, client and secret are fixed; scripts/test passes the
// same values to the server it builds OXISCALE_E2E_SERVER_CMD for. The workers read the
// issuer from the environment (tests/oidc-device-login.spec.ts calls its test hooks).
// Console roles from provider groups (tests/oidc-console.spec.ts): the accounts nora, ivan and
// audrey in end2end/oidc/accounts.json are in these groups; everyone else is a member.
const oidcIssuer = (process.env.OXISCALE_E2E_OIDC_ISSUER = "http://127.0.0.1:18490");
const oidcServerEnv =
  `OXISCALE_OIDC_ISSUER=${oidcIssuer} OXISCALE_OIDC_CLIENT_ID=oxiscale ` +
  `OXISCALE_OIDC_CLIENT_SECRET=oxiscale-e2e-secret OXISCALE_OIDC_PKCE_ENABLED=true ` +
  `OXISCALE_OIDC_ALLOWED_DOMAINS='[example.com]' ` +
  `OXISCALE_CONSOLE_ROLES_NETWORK_ADMIN='[netadmins]' OXISCALE_CONSOLE_ROLES_IT_ADMIN='[itadmins]' ` +
  `OXISCALE_CONSOLE_ROLES_AUDITOR='[auditors]'`;
const serverCommand =
  process.env.OXISCALE_E2E_SERVER_CMD ??
  `env OXISCALE_DATA_DIR=${process.env.OXISCALE_E2E_DATA_DIR} OXISCALE_LISTEN_ADDR=127.0.0.1:${port} OXISCALE_SERVER_URL=http://127.0.0.1:${port} OXISCALE_DERP_SERVER_STUN_LISTEN_ADDR=127.0.0.1:0 OXISCALE_POLICY_MODE=database ${oidcServerEnv} ${process.env.OXISCALE_E2E_BIN} serve`;

export default defineConfig({
  testDir: "./tests",
  outputDir: "./test-results",
  fullyParallel: true,
  forbidOnly: !!process.env.CI,
  retries: 0,
  workers: process.env.CI ? 1 : undefined,
  reporter: "line",
  timeout: 30_000,
  use: {
    baseURL,
    trace: "retain-on-failure",
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
      ],
    },
  },
  projects: [
    { name: "desktop", use: { ...devices["Desktop Chrome"] } },
    // Chromium with a phone-sized viewport and touch; the layout must not need sideways scrolling.
    { name: "phone", use: { ...devices["Pixel 7"] } },
  ],
  // Playwright 1.65 starts these in order, each awaited until its URL answers, and stops them
  // in reverse (lib/runner/index.js: one "plugin setup" task per entry, run one after another
  // by TaskRunner; teardowns unshifted). So the provider is up before the server, which
  // discovers it at start (oidc.only_start_if_oidc_is_available), and outlives it.
  webServer: [
    {
      command: "node ../oidc/provider.mjs",
      url: `${oidcIssuer}/.well-known/openid-configuration`,
      env: {
        OIDC_PORT: new URL(oidcIssuer).port,
        // The server's callback; the provider refuses any other redirect URI.
        OIDC_REDIRECT_URIS: `${(process.env.OXISCALE_E2E_SERVER_URL ?? baseURL).replace(/\/$/, "")}/oidc/callback`,
      },
      timeout: 30_000,
      reuseExistingServer: !process.env.CI,
      stdout: "ignore",
      // Its refusals (wrong verifier, replayed code) are logged here, one line each.
      stderr: "pipe",
    },
    {
      command: serverCommand,
      // Run from the repository root so relative paths (target/site) resolve.
      cwd: "../..",
      url: baseURL,
      // A cold `cargo run` compiles the server half first.
      timeout: 15 * 60_000,
      reuseExistingServer: !process.env.CI,
      stdout: "pipe",
      stderr: "pipe",
    },
  ],
});
