// Shared fixtures for the console's browser tests. Import `test` and `expect` from here
// instead of "@playwright/test": every `page`, `context` and `page.request` is then signed in
// as the test administrator, whom the first worker creates with the real CLI
// (`oxiscale admins create --password-stdin` over the server's admin socket).
//
// Environment (scripts/test sets these; playwright.config.ts picks defaults for runs by hand):
//   OXISCALE_E2E_BIN        the oxiscale binary (for the CLI)
//   OXISCALE_E2E_DATA_DIR   the server's data directory (the CLI finds the socket there)
//
// A test that needs a signed-out browser opts out with
//   test.use({ storageState: signedOut });
import { execFileSync } from "node:child_process";
import path from "node:path";
import { test as base, expect, type APIRequestContext } from "@playwright/test";

/** The administrator the fixtures sign in as. A throwaway server, so a fixed password is fine. */
export const admin = {
  name: process.env.OXISCALE_E2E_ADMIN ?? "e2e-admin",
  password: process.env.OXISCALE_E2E_ADMIN_PASSWORD ?? "e2e correct horse battery staple",
};

/** Storage state of a browser that has never signed in. */
export const signedOut = { cookies: [], origins: [] };

const repoRoot = path.resolve(__dirname, "../../..");

/** Runs the oxiscale CLI against the server under test; returns stdout. */
export function oxiscaleCli(args: string[], input?: string): string {
  const bin = process.env.OXISCALE_E2E_BIN ?? path.join(repoRoot, "target/debug/oxiscale");
  const dataDir = process.env.OXISCALE_E2E_DATA_DIR;
  if (!dataDir) throw new Error("OXISCALE_E2E_DATA_DIR is not set: the CLI cannot find the server's socket");
  return execFileSync(bin, args, {
    input,
    env: { ...process.env, OXISCALE_DATA_DIR: dataDir },
    encoding: "utf8",
    stdio: ["pipe", "pipe", "pipe"],
  });
}

/** Creates the test administrator unless it exists (several workers may race to do it). */
function ensureAdmin() {
  try {
    oxiscaleCli(["admins", "create", admin.name, "--password-stdin"], `${admin.password}\n`);
  } catch (err) {
    const stderr = String((err as { stderr?: string }).stderr ?? err);
    if (!stderr.includes("already exists")) throw new Error(`creating the test administrator failed: ${stderr}`);
  }
}

/** The CSRF token the server rendered into a page's head. */
export function csrfFrom(html: string): string {
  const match = html.match(/<meta name="csrf-token" content="([^"]+)"/);
  if (!match) throw new Error("the page carries no CSRF token");
  return match[1];
}

/** Signs `request` in through the real login form (GET for the token, then POST). */
export async function signIn(request: APIRequestContext, name = admin.name, password = admin.password) {
  const form = await request.get("/login");
  expect(form.status()).toBe(200);
  const response = await request.post("/login", {
    form: { _csrf: csrfFrom(await form.text()), username: name, password, next: "/machines" },
    maxRedirects: 0,
  });
  expect(response.status(), "sign-in answers with a redirect").toBe(303);
  expect(response.headers()["location"], "sign-in succeeded").toBe("/machines");
}

type WorkerFixtures = {
  adminAccount: typeof admin;
  adminState: Awaited<ReturnType<APIRequestContext["storageState"]>>;
};

export const test = base.extend<object, WorkerFixtures>({
  // Automatic: signed-out tests sign in by hand and need the account too.
  adminAccount: [
    async ({}, use) => {
      ensureAdmin();
      await use(admin);
    },
    { scope: "worker", auto: true },
  ],
  // One session per worker, shared by its tests: signing in costs an argon2 verification.
  adminState: [
    async ({ playwright, adminAccount: _ }, use, workerInfo) => {
      const request = await playwright.request.newContext({ baseURL: workerInfo.project.use.baseURL });
      await signIn(request);
      await use(await request.storageState());
      await request.dispose();
    },
    { scope: "worker" },
  ],
  storageState: async ({ adminState }, use) => {
    await use(adminState);
  },
});

export { expect };
