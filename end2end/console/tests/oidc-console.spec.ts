import { type APIResponse, type Browser, type Page, type TestInfo } from "@playwright/test";
import {
  expect,
  landOn,
  listNodes,
  listUsers,
  nodeNamed,
  oxiscaleCli,
  serverURL,
  signedOut,
  signInAtProvider,
  signInThroughProvider,
  startNode,
  test,
  type UserJson,
} from "./fixtures";

// Console single sign-on through the REAL OpenID provider (end2end/oidc/provider.mjs) and the
// console roles it gives. The server maps provider groups to roles (playwright.config.ts,
// scripts/test): netadmins -> network admin (nora), itadmins -> IT admin (ivan), auditors ->
// auditor (audrey); everyone else the provider lets in is a member (bob, groups [sales]).
// allowed_domains is [example.com], so mallory@evil.test is refused.
//
// The UI does not hide what a role cannot use yet, so refusals are checked where the pages
// show server errors (role="alert") and, for the server's own word, by calling the server
// functions directly the way the browser half does (JSON body + the session's CSRF header).
// A role refusal answers 403 {"NotAllowed": "your console role (…) does not allow this"};
// another person's machine answers 404 {"NotFound": …} to a member, so ids reveal nothing.

const stamp = Date.now().toString(36);
// Someone else's machine: a real tsnet node joined with a pre-auth key of a local user.
const otherUser = `sso-other-${stamp}`;
const otherHost = `sso-other-${stamp}`;
let stopOther = () => {};
// A spare pre-auth key of that user, which a member must not be able to touch.
let otherKeyId = 0;

// One worker, in order: the tests share the machine made once below.
test.describe.configure({ mode: "default" });
test.use({ storageState: signedOut });

test.beforeEach(async ({}, testInfo) => {
  test.skip(testInfo.project.name !== "desktop", "roles are server-side; one viewport is enough");
});

test.beforeAll(async ({}, testInfo) => {
  if (testInfo.project.name !== "desktop") return;
  testInfo.setTimeout(150_000);
  const user: UserJson = JSON.parse(oxiscaleCli(["users", "create", otherUser, "-o", "json"]));
  const key = JSON.parse(oxiscaleCli(["preauthkeys", "create", "--user", String(user.id), "-o", "json"])).key as string;
  const node = startNode(key, otherHost);
  stopOther = () => node.stop();
  await expect.poll(() => nodeNamed(otherHost)?.online ?? false, { message: `node output:\n${node.output()}`, timeout: 120_000 }).toBe(true);
  otherKeyId = JSON.parse(oxiscaleCli(["preauthkeys", "create", "--user", String(user.id), "--reusable", "-o", "json"])).id;
  // An API key exists, so "a member sees no API keys" means something.
  oxiscaleCli(["apikeys", "create", "-e", "1h"]);
});

// Other specs expect an empty tailnet.
test.afterAll(async ({}, testInfo) => {
  if (testInfo.project.name !== "desktop") return;
  const node = nodeNamed(otherHost);
  stopOther();
  if (node) oxiscaleCli(["nodes", "delete", "-i", String(node.id)]);
});

/** A fresh browser (no session here or at the provider) signed in as `login` through the
 * provider; waits until the console shows the machine list. */
async function personSignedIn(browser: Browser, testInfo: TestInfo, login: string): Promise<Page> {
  const context = await browser.newContext({ baseURL: testInfo.project.use.baseURL });
  const page = await context.newPage();
  await signInThroughProvider(page, login);
  await expect(page).toHaveURL(/\/machines$/);
  await expect(page.locator('meta[name="console-user"]')).toHaveAttribute("content", `${login}@example.com`);
  return page;
}

/** Calls a console server function as the page's session does: the CSRF token from the
 * page's <meta>, JSON arguments (or the empty form body of the argument-less ones). */
async function serverFn(page: Page, endpoint: string, args?: object): Promise<APIResponse> {
  const csrf = await page.locator('meta[name="csrf-token"]').getAttribute("content");
  expect(csrf, "the page carries a CSRF token").toBeTruthy();
  return page.request.post(`/console/fn/${endpoint}`, {
    headers: {
      "x-csrf-token": csrf!,
      "content-type": args ? "application/json" : "application/x-www-form-urlencoded",
    },
    data: args ? JSON.stringify(args) : "",
  });
}

/** The server refused `response` for the role: 403 with "does not allow" (or `reason`). */
async function expectRoleRefusal(response: APIResponse, what: string, reason: string | RegExp = "does not allow") {
  const body = await response.text();
  expect(response.status(), `${what}: ${body}`).toBe(403);
  expect(body, what).toMatch(reason);
}

/** The server answered `response` with "not found" (404, ConsoleError::NotFound). */
async function expectNotFound(response: APIResponse, what: string) {
  const body = await response.text();
  expect(response.status(), `${what}: ${body}`).toBe(404);
  expect(body, what).toContain("NotFound");
}

const otherId = () => {
  const node = nodeNamed(otherHost);
  expect(node, `${otherHost} exists`).toBeDefined();
  return node!.id;
};

/** Waits for a machine list that is hydrated, with `host`'s actions usable. */
async function machineRow(page: Page, host: string) {
  await page.goto(`/machines?q=${host}`);
  const row = page.locator(`tr[data-machine="${host}"]`);
  await expect(row.getByRole("button", { name: `Actions for ${host}` })).toBeEnabled({ timeout: 30_000 });
  return row;
}

/** Resolves once the page's WASM is instantiated and hydration (which leptos' hydration
 * script runs right after, in the same promise chain) has had its turn. The sign-in page has
 * no control that shows it, so this watches WebAssembly itself; call before `page.goto`. */
async function hydrationWatch(page: Page) {
  await page.addInitScript(() => {
    const flagged = (name: "instantiate" | "instantiateStreaming") => {
      const original = WebAssembly[name] as (...args: unknown[]) => Promise<unknown>;
      (WebAssembly as unknown as Record<string, unknown>)[name] = (...args: unknown[]) =>
        original.apply(WebAssembly, args).then((result) => {
          (window as unknown as { __wasmReady: boolean }).__wasmReady = true;
          return result;
        });
    };
    flagged("instantiateStreaming");
    flagged("instantiate");
  });
  return async () => {
    await page.waitForFunction(() => (window as unknown as { __wasmReady?: boolean }).__wasmReady === true);
    await page.evaluate(() => new Promise((resolve) => setTimeout(resolve, 100)));
  };
}

test("the sign-in page's provider link, clicked once the page is live, goes to the provider", async ({ page }) => {
  // A plain <a href="/login/oidc…"> inside the app: unless it is marked rel="external", the
  // hydrated router takes the click as an in-app navigation and shows its "Page not found".
  const hydrated = await hydrationWatch(page);
  await page.goto("/machines");
  await expect(page).toHaveURL(/\/login\?next=%2Fmachines$/);
  const sso = page.locator("#login-sso");
  await expect(sso).toHaveText("Sign in with 127.0.0.1");
  await expect(sso).toHaveAttribute("href", "/login/oidc?next=%2Fmachines");
  await hydrated();
  await sso.click();
  await signInAtProvider(page, "bob");
  await expect(page).toHaveURL(/\/machines$/);
  await expect(page.getByRole("banner")).toContainText("Signed in as bob@example.com");
});

test("a member signs in with the provider and sees, changes and deletes only their own", async ({ page }, testInfo) => {
  test.setTimeout(180_000);
  // Signed out, a console page sends to /login, whose provider link keeps where to return.
  await page.goto("/machines");
  await expect(page).toHaveURL(/\/login\?next=%2Fmachines$/);
  const sso = page.locator("#login-sso");
  await expect(sso).toHaveAttribute("href", "/login/oidc?next=%2Fmachines");
  await page.goto((await sso.getAttribute("href"))!);
  await signInAtProvider(page, "bob");
  await expect(page).toHaveURL(/\/machines$/);
  await expect(page.getByRole("banner")).toContainText("Signed in as bob@example.com");
  const bob = listUsers().find((u) => u.email === "bob@example.com");
  expect(bob, "signing in made bob a tailnet user").toBeDefined();

  // Keys: pre-auth keys for himself only, no API keys although one exists.
  expect(JSON.parse(oxiscaleCli(["apikeys", "list", "-o", "json"])).length, "an API key exists").toBeGreaterThan(0);
  await page.goto("/keys");
  const form = page.getByRole("form", { name: "Create a pre-auth key" });
  await expect(form.getByRole("button", { name: "Create pre-auth key" })).toBeEnabled();
  const owners = await form.getByLabel("User").locator("option").allTextContents();
  expect(owners, "bob may only make keys for himself").toEqual([bob!.name, "None (tagged key)"]);
  await expect(page.locator("tr[data-api-key]")).toHaveCount(0);
  await expect(page.getByText("No API keys.")).toBeVisible();
  for (const forWhom of await page.locator("tr[data-key] td[data-label='For']").allTextContents()) expect(forWhom).toBe(bob!.name);
  // Tags are an administrator's to give.
  await form.getByLabel("Tags").fill("tag:web");
  await form.getByRole("button", { name: "Create pre-auth key" }).click();
  await expect(form.getByRole("alert")).toContainText("members create pre-auth keys for themselves, without tags");
  await form.getByLabel("Tags").fill("");
  await form.getByRole("button", { name: "Create pre-auth key" }).click();
  const key = ((await page.locator("#new-preauth-key").textContent()) ?? "").trim();
  expect(key).toMatch(/\S{20,}/);

  // His own machine, joined with that key.
  const ownHost = `sso-bob-${stamp}`;
  const own = startNode(key, ownHost);
  try {
    await expect.poll(() => nodeNamed(ownHost)?.user?.id, { message: `node output:\n${own.output()}`, timeout: 120_000 }).toBe(bob!.id);

    // Machines: his own, none of anyone else's (the CLI sees them all).
    await machineRow(page, ownHost);
    await page.goto("/machines");
    await expect(page.locator(`tr[data-machine="${ownHost}"]`)).toBeVisible();
    await expect(page.locator(`tr[data-machine="${otherHost}"]`)).toHaveCount(0);
    const his = listNodes().filter((n) => n.user?.id === bob!.id);
    expect(listNodes().length, "other machines exist").toBeGreaterThan(his.length);
    await expect(page.locator("tr[data-machine]")).toHaveCount(his.length);
    await testInfo.attach("member-machines", { body: await page.screenshot({ fullPage: true }), contentType: "image/png" });

    // Users: only himself.
    await page.goto("/users");
    await expect(page.locator("tr[data-user]")).toHaveCount(1);
    await expect(page.locator(`tr[data-user="${bob!.name}"]`)).toBeVisible();

    // DNS and the policy are not a member's: the pages show the server's refusal.
    for (const path of ["/dns", "/acls"]) {
      await page.goto(path);
      await expect(page.getByRole("alert"), path).toContainText("your console role (Member) does not allow this");
    }
    await expect(page.locator("form.dns-form")).toHaveCount(0);

    // The server's own word, asked directly: someone else's machine does not exist for him,
    // and every administrator's action is refused.
    const other = otherId();
    await expectNotFound(await serverFn(page, "machine/delete", { id: other }), "delete another's machine");
    await expectNotFound(await serverFn(page, "machine/rename", { id: other, name: "taken-over" }), "rename another's machine");
    await expectNotFound(await serverFn(page, "machine/expire", { id: other }), "expire another's machine");
    await expectNotFound(await serverFn(page, "machine", { id: other }), "read another's machine");
    await expectNotFound(await serverFn(page, "preauth-key/expire", { id: otherKeyId }), "expire another's pre-auth key");
    const ownId = nodeNamed(ownHost)!.id;
    await expectRoleRefusal(await serverFn(page, "machine/tags", { id: ownId, tags: "tag:web" }), "tag his own machine");
    await expectRoleRefusal(await serverFn(page, "machine/routes", { id: ownId, routes: ["0.0.0.0/0", "::/0"] }), "approve his own routes");
    await expectRoleRefusal(await serverFn(page, "api-key/create", { expiration: "1h" }), "create an API key");
    await expectRoleRefusal(await serverFn(page, "user/create", { name: `bob-made-${stamp}`, display_name: "", email: "" }), "create a user");
    await expectRoleRefusal(await serverFn(page, "dns/get"), "read DNS");
    await expectRoleRefusal(await serverFn(page, "policy/get"), "read the policy");
    await expectRoleRefusal(await serverFn(page, "policy/set", { text: "{}" }), "replace the policy");
    const otherUserId = listUsers().find((u) => u.name === otherUser)!.id;
    await expectRoleRefusal(
      await serverFn(page, "preauth-key/create", { key: { user: otherUserId, tags: "", reusable: false, ephemeral: false, expiration: "1h" } }),
      "a key for someone else",
      "members create pre-auth keys for themselves",
    );
    expect(nodeNamed(otherHost)?.id, "the other machine is still there").toBe(other);
    expect(nodeNamed(otherHost)?.user?.name).toBe(otherUser);
    // headscale's -o json: times as {seconds, nanos}.
    type KeyJson = { id: number; expiration?: { seconds?: number } };
    const otherKey = (JSON.parse(oxiscaleCli(["preauthkeys", "list", "-o", "json"])) as KeyJson[]).find((k) => k.id === otherKeyId);
    expect((otherKey?.expiration?.seconds ?? 0) * 1000, "the other user's key still works").toBeGreaterThan(Date.now());
    // The machine's own page says the same as the server function.
    await page.goto(`/machines/${other}`);
    await expect(page.getByRole("alert")).toContainText("not found");
    await expect(page.locator("body")).not.toContainText(otherHost);

    // His own machine he may rename, then delete, in the list's own controls.
    const renamed = `sso-bob-renamed-${stamp}`;
    let row = await machineRow(page, ownHost);
    await row.getByRole("button", { name: `Actions for ${ownHost}` }).click();
    await row.getByRole("button", { name: `Rename ${ownHost}` }).click();
    await row.getByLabel("New name").fill(renamed);
    await row.getByRole("button", { name: "Save name" }).click();
    await expect.poll(() => listNodes().find((n) => n.id === ownId)?.given_name, { message: "renamed" }).toBe(renamed);
    row = await machineRow(page, renamed);
    await row.getByRole("button", { name: `Actions for ${renamed}` }).click();
    await row.getByRole("button", { name: `Delete ${renamed}` }).click();
    await row.getByRole("button", { name: "Delete machine" }).click();
    await expect(page.locator(`tr[data-machine="${renamed}"]`)).toHaveCount(0);
    expect(listNodes().find((n) => n.id === ownId), "deleted").toBeUndefined();
  } finally {
    own.stop();
  }
});

test("a network admin edits policy and DNS but not machines; an auditor reads all and changes nothing; an IT admin the reverse", async ({ browser }, testInfo) => {
  test.setTimeout(120_000);
  const other = otherId();
  const otherName = () => listNodes().find((n) => n.id === other)?.given_name;
  const before = otherName();

  // nora (netadmins): the policy editor and the DNS form load and save; renaming is refused.
  const nora = await personSignedIn(browser, testInfo, "nora");
  try {
    await nora.goto("/acls");
    await expect(nora.locator('.acl-actions[data-ready="true"]').first()).toBeVisible();
    await expect(nora.getByLabel("Policy (HuJSON)")).toBeEditable();
    await nora.goto("/dns");
    await expect(nora.locator('form.dns-form[data-ready="true"]')).toBeVisible();
    await expect(nora.getByRole("alert")).toHaveCount(0);
    // Saving the settings as they are is a real write the role allows.
    await nora.getByRole("button", { name: "Save DNS settings" }).click();
    await expect(nora.getByRole("status").filter({ hasText: "Saved." })).toBeVisible();
    const row = await machineRow(nora, before!);
    await row.getByRole("button", { name: `Actions for ${before}` }).click();
    await row.getByRole("button", { name: `Rename ${before}` }).click();
    await row.getByLabel("New name").fill(`${before}-by-nora`);
    await row.getByRole("button", { name: "Save name" }).click();
    await expect(row.getByRole("alert")).toContainText("your console role (Network admin) does not allow this");
    await testInfo.attach("network-admin-rename-refused", { body: await nora.screenshot({ fullPage: true }), contentType: "image/png" });
    await expectRoleRefusal(await serverFn(nora, "machine/delete", { id: other }), "network admin deletes a machine");
    await expectRoleRefusal(await serverFn(nora, "api-key/create", { expiration: "1h" }), "network admin creates an API key");
    expect(otherName(), "not renamed").toBe(before);
  } finally {
    await nora.context().close();
  }

  // audrey (auditors): everything visible, every change refused.
  const audrey = await personSignedIn(browser, testInfo, "audrey");
  try {
    await expect(audrey.locator(`tr[data-machine="${before}"]`)).toBeVisible();
    // Every machine the CLI lists (polled: other machines may come and go meanwhile).
    await expect.poll(async () => (await audrey.locator("tr[data-machine]").count()) === listNodes().length, { message: "all machines" }).toBe(true);
    await audrey.goto("/dns");
    await expect(audrey.locator('form.dns-form[data-ready="true"]')).toBeVisible();
    await audrey.getByRole("button", { name: "Save DNS settings" }).click();
    await expect(audrey.getByRole("alert")).toContainText("Not saved: your console role (Auditor) does not allow this");
    await audrey.goto("/acls");
    await expect(audrey.locator('.acl-actions[data-ready="true"]').first()).toBeVisible();
    await expectRoleRefusal(await serverFn(audrey, "policy/set", { text: "{}" }), "auditor replaces the policy");
    await expectRoleRefusal(await serverFn(audrey, "machine/rename", { id: other, name: `${before}-by-audrey` }), "auditor renames");
    await expectRoleRefusal(await serverFn(audrey, "user/create", { name: `audrey-made-${stamp}`, display_name: "", email: "" }), "auditor creates a user");
    expect(otherName(), "not renamed").toBe(before);
  } finally {
    await audrey.context().close();
  }

  // ivan (itadmins): renames machines, but DNS and the policy are not his.
  const ivan = await personSignedIn(browser, testInfo, "ivan");
  try {
    const renamed = await serverFn(ivan, "machine/rename", { id: other, name: `${before}-by-ivan` });
    expect(renamed.status(), await renamed.text()).toBe(200);
    expect(otherName()).toBe(`${before}-by-ivan`);
    expect((await serverFn(ivan, "machine/rename", { id: other, name: before! })).status()).toBe(200);
    const dns = await serverFn(ivan, "dns/get");
    expect(dns.status(), "an IT admin reads DNS").toBe(200);
    await expectRoleRefusal(await serverFn(ivan, "dns/set", { settings: await dns.json() }), "IT admin saves DNS");
    await expectRoleRefusal(await serverFn(ivan, "policy/set", { text: "{}" }), "IT admin replaces the policy");
    await expectRoleRefusal(await serverFn(ivan, "api-key/create", { expiration: "1h" }), "IT admin creates an API key");
    expect(otherName()).toBe(before);
  } finally {
    await ivan.context().close();
  }
});

test("a person outside the allowed domains is refused and gets no session", async ({ page }) => {
  const response = await landOn(page, () => signInThroughProvider(page, "mallory"), "Sign-in refused");
  expect(response.status()).toBe(403);
  await expect(page.locator("p", { hasText: /example\.com/ }).first()).toBeVisible();
  await page.goto("/machines");
  await expect(page).toHaveURL(/\/login\?next=%2Fmachines$/);
  expect(listUsers().filter((u) => u.email === "mallory@evil.test"), "no user").toEqual([]);
});

test("signing out ends a provider session like a local one", async ({ page, context }) => {
  await page.goto("/login");
  const anonymous = (await context.cookies()).find((c) => c.name === "oxiscale_session");
  // `next` survives the trip to the provider and back.
  await signInThroughProvider(page, "bob", "/keys");
  await expect(page).toHaveURL(/\/keys$/);
  const header = page.getByRole("banner");
  await expect(header).toContainText("Signed in as bob@example.com");
  const during = (await context.cookies()).find((c) => c.name === "oxiscale_session");
  expect(during?.value, "a new session id at sign-in").not.toBe(anonymous?.value);

  await header.getByRole("button", { name: "Sign out" }).click();
  await expect(page).toHaveURL(/\/login$/);
  // The old session cookie is dead even if replayed.
  await context.addCookies([during!]);
  await page.goto("/machines");
  await expect(page).toHaveURL(/\/login\?next=%2Fmachines$/);

  // Signing out of the console is not signing out of the provider (as with any single
  // sign-on): the provider answers at once. And `next` never leaves the site.
  await page.goto(`/login/oidc?next=${encodeURIComponent("//evil.test/x")}`);
  await expect(page).toHaveURL(/\/machines$/);
  expect(page.url()).toBe(`${serverURL}/machines`);
  await expect(header).toContainText("Signed in as bob@example.com");
});
