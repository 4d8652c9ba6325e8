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
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test as base, expect, type APIRequestContext, type Page, type Response } from "@playwright/test";

/** The administrator the fixtures sign in as. A throwaway server, so a fixed password is fine. */
export const admin = {
  name: process.env.OXISCALE_E2E_ADMIN ?? "e2e-admin",
  password: process.env.OXISCALE_E2E_ADMIN_PASSWORD ?? "e2e correct horse battery staple",
};

/** The URL the server under test tells clients to use as --login-server. The dev server
 * defaults it to its own address; set OXISCALE_E2E_SERVER_URL when it differs. */
export const serverURL = (
  process.env.OXISCALE_E2E_SERVER_URL ??
  process.env.OXISCALE_E2E_BASE_URL ??
  "http://127.0.0.1:3000"
).replace(/\/$/, "");

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

/** Creates a user through the Users page's form and waits for its row. */
export async function createUser(page: Page, name: string) {
  await page.goto("/users");
  const form = page.getByRole("form", { name: "Create a user" });
  await expect(form.getByRole("button", { name: "Create user" })).toBeEnabled();
  await form.getByLabel("Name", { exact: true }).fill(name);
  await form.getByRole("button", { name: "Create user" }).click();
  await expect(page.locator(`tr[data-user="${name}"]`)).toBeVisible();
}

/** Creates a pre-auth key for `user` on the Keys page; returns the secret it shows once. */
export async function createPreAuthKey(page: Page, user: string): Promise<string> {
  await page.goto("/keys");
  const form = page.getByRole("form", { name: "Create a pre-auth key" });
  await expect(form.getByRole("button", { name: "Create pre-auth key" })).toBeEnabled();
  await form.getByLabel("User").selectOption({ label: user });
  await form.getByRole("button", { name: "Create pre-auth key" }).click();
  return ((await page.locator("#new-preauth-key").textContent()) ?? "").trim();
}

const nodeScript = path.resolve(__dirname, "../../clients/node.py");

/** A real tsnet node (end2end/clients/node.py) joining with `authkey`; `stop()` ends its
 * whole process group, then removes its state. Each of `proxyTo` (a peer's MagicDNS name or
 * tailnet IP) gets a local reverse proxy to http://PEER:80 through the tailnet;
 * `proxyURL(peer)` waits for node.py to print its address. With `authkey` null the node logs
 * in interactively, like `tailscale up` without a key: `authURL()` waits for the AuthURL. */
export function startNode(authkey: string | null, hostname: string, proxyTo: string[] = []) {
  const state = mkdtempSync(path.join(tmpdir(), "oxnode-"));
  const proc = spawn(
    "python3",
    [
      nodeScript,
      ...["--server", serverURL, ...(authkey === null ? ["--interactive"] : ["--authkey", authkey])],
      ...["--hostname", hostname, "--state", state],
      ...proxyTo.flatMap((peer) => ["--proxy-to", peer]),
    ],
    { detached: true, stdio: ["ignore", "pipe", "pipe"] },
  );
  const out = collectOutput(proc);
  return {
    output: out.text,
    async proxyURL(peer: string): Promise<string> {
      const line = await out.waitFor(new RegExp(`^node: proxy to ${peer.replace(/\./g, "\\.")} at (\\S+)$`, "m"), 30_000);
      return line[1];
    },
    /** The first AuthURL the node printed (tsnet logs one a few seconds after start). */
    async authURL(timeout = 60_000): Promise<string> {
      return (await out.waitFor(/^node: auth url (\S+)$/m, timeout))[1];
    },
    stop() {
      stopGroup(proc);
      setTimeout(() => rmSync(state, { recursive: true, force: true }), 12_000).unref();
    },
  };
}

/** Gathers a child's stdout and stderr; `waitFor` polls it for a line. */
function collectOutput(proc: ChildProcess) {
  let output = "";
  proc.stdout?.on("data", (d) => (output += d));
  proc.stderr?.on("data", (d) => (output += d));
  const text = () => output;
  return {
    text,
    async waitFor(pattern: RegExp, timeout: number): Promise<RegExpMatchArray> {
      let match: RegExpMatchArray | null = null;
      await expect
        .poll(() => (match = text().match(pattern)) !== null, { message: `waiting for ${pattern} in:\n${text()}`, timeout })
        .toBe(true);
      return match!;
    },
  };
}

/** SIGTERM to a detached child's whole process group (it may be gone already). */
function stopGroup(proc: ChildProcess) {
  try {
    if (proc.pid) process.kill(-proc.pid, "SIGTERM");
  } catch {
    // already gone
  }
}

/** The project's own protocol client (oxiscale-loadgen, built beside the server binary)
 * holding ONE node named `hostname` that advertises `routes` (Hostinfo.RoutableIPs); it prints
 * `hold: route approved in map: R` when its own node in the map allows R. */
export function startRouter(authkey: string, hostname: string, routes: string[]) {
  const bin =
    process.env.OXISCALE_E2E_LOADGEN_BIN ??
    path.join(path.dirname(process.env.OXISCALE_E2E_BIN ?? path.join(repoRoot, "target/debug/oxiscale")), "oxiscale-loadgen");
  const proc = spawn(
    bin,
    ["--url", serverURL, "--auth-key", authkey, "--scenarios", "hold", "--hostname", hostname, "--routes", routes.join(",")],
    { detached: true, stdio: ["ignore", "pipe", "pipe"] },
  );
  let exited: string | null = null;
  proc.on("error", (err) => (exited = `could not start ${bin}: ${err.message}`));
  proc.on("exit", (code, signal) => (exited ??= `exited with ${code ?? signal}`));
  const out = collectOutput(proc);
  return {
    output: () => `${out.text()}${exited ? `\n[${exited}]` : ""}`,
    waitFor: out.waitFor,
    stop: () => stopGroup(proc),
  };
}

// ---- The tailnet as the CLI sees it (JSON output of `nodes list`, `users list`) ----

export type UserJson = { id: number; name: string; email?: string };
export type NodeJson = {
  id: number;
  name: string;
  given_name?: string;
  online?: boolean;
  os?: string;
  node_key?: string;
  ip_addresses?: string[];
  user?: UserJson | null;
};

export const listNodes = (): NodeJson[] => JSON.parse(oxiscaleCli(["nodes", "list", "-o", "json"])) ?? [];
export const listUsers = (): UserJson[] => JSON.parse(oxiscaleCli(["users", "list", "-o", "json"])) ?? [];
export const nodeNamed = (host: string) => listNodes().find((n) => n.name === host || n.given_name === host);

// ---- Traffic through the tailnet (node.py's local proxies) ----

// A blocked request is a dropped SYN: the proxy just waits, so each try is short.
const BLOCKED_TRY_MS = 4_000;
// Allowed traffic may need the new filter to arrive and a path to form.
const REACH_TIMEOUT_MS = 90_000;

/** True when the proxy at `url` relays `expected` (the peer's hostname) within one short try. */
export async function reaches(url: string, expected: string): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(BLOCKED_TRY_MS) });
    return res.status === 200 && (await res.text()).trim() === expected;
  } catch {
    return false;
  }
}

export async function waitReach(url: string, expected: string, what: string) {
  await expect.poll(() => reaches(url, expected), { message: what, timeout: REACH_TIMEOUT_MS, intervals: [500] }).toBe(true);
}

/** Waits for three refused tries in a row (a policy change may take a moment to land). */
export async function waitBlocked(url: string, expected: string, what: string) {
  let streak = 0;
  await expect
    .poll(async () => (streak = (await reaches(url, expected)) ? 0 : streak + 1), { message: what, timeout: 40_000, intervals: [200] })
    .toBeGreaterThanOrEqual(3);
}

// ---- The OpenID provider (end2end/oidc/provider.mjs, started by playwright.config.ts) ----

/** Its issuer; playwright.config.ts sets the variable for the workers. */
export const oidcIssuer = process.env.OXISCALE_E2E_OIDC_ISSUER ?? "http://127.0.0.1:18490";

/** Calls one of the provider's test hooks (see provider.mjs), e.g. `accounts/<login>`. */
export async function providerHook(hook: string, body: unknown, method = "POST") {
  const res = await fetch(`${oidcIssuer}/test/${hook}`, { method, body: JSON.stringify(body) });
  expect(res.ok, `provider hook ${hook}: ${await res.text()}`).toBe(true);
}

/** On the provider's login page: signs `login` in (password `<login>-password`), then
 * consents to what oxiscale asks unless `consent` is false (the browser then stays on the
 * consent page). Needs a browser that has no session at the provider yet. */
export async function signInAtProvider(page: Page, login: string, consent = true) {
  await expect(page, "the server sent the browser to the provider").toHaveURL(new RegExp(`^${oidcIssuer.replace(/\./g, "\\.")}/interaction/`));
  await page.locator('input[name="login"]').fill(login);
  await page.locator('input[name="password"]').fill(`${login}-password`);
  await page.getByRole("button", { name: "Sign-in" }).click();
  const proceed = page.getByRole("button", { name: "Continue" });
  if (consent) await proceed.click();
  else await expect(proceed).toBeVisible();
}

/** Runs `action`, waits for the server's page with h1 `heading`, and returns that page's own
 * HTTP response (the last non-redirect main-frame document from the server: the callback may
 * answer itself or redirect to the page). */
export async function landOn(page: Page, action: () => Promise<unknown>, heading: string | RegExp): Promise<Response> {
  const documents: Response[] = [];
  const seen = (r: Response) => {
    if (r.request().isNavigationRequest() && r.frame() === page.mainFrame() && r.url().startsWith(serverURL) && (r.status() < 300 || r.status() >= 400)) documents.push(r);
  };
  page.on("response", seen);
  try {
    await action();
    await expect(page.getByRole("heading", { level: 1 })).toHaveText(heading);
  } finally {
    page.off("response", seen);
  }
  expect(documents.length, "the server answered with a page").toBeGreaterThan(0);
  return documents[documents.length - 1];
}

/** Console single sign-on: from the signed-out /login (with `next` when given), opens the
 * address of its "Sign in with <issuer host>" link and signs `login` in at the provider.
 * Leaves the browser wherever the server sends it (the console on success, a refusal page
 * otherwise). It opens the href rather than clicking, so that the roles' tests do not depend
 * on the hydrated page's click handling, which oidc-console.spec.ts tests on its own. */
export async function signInThroughProvider(page: Page, login: string, next?: string) {
  await page.goto(next === undefined ? "/login" : `/login?next=${encodeURIComponent(next)}`);
  const link = page.locator("#login-sso");
  await expect(link).toHaveText(`Sign in with ${new URL(oidcIssuer).hostname}`);
  await page.goto((await link.getAttribute("href"))!);
  await signInAtProvider(page, login);
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
