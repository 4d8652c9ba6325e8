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
const serverCommand =
  process.env.OXISCALE_E2E_SERVER_CMD ??
  `env OXISCALE_DATA_DIR=${process.env.OXISCALE_E2E_DATA_DIR} OXISCALE_LISTEN_ADDR=127.0.0.1:${port} OXISCALE_SERVER_URL=http://127.0.0.1:${port} OXISCALE_DERP_SERVER_STUN_LISTEN_ADDR=127.0.0.1:0 OXISCALE_POLICY_MODE=database ${process.env.OXISCALE_E2E_BIN} serve`;

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
  webServer: {
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
});
