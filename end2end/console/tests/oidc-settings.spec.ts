import { type Page } from "@playwright/test";
import { csrfFrom, expect, listUsers, oidcIssuer, oxiscaleCli, providerHook, signIn, signInThroughProvider, signedOut, test } from "./fixtures";

// The Identity page (/settings/identity) against the real server and the REAL OpenID provider
// (end2end/oidc/provider.mjs). The server starts with the provider in its environment
// (OXISCALE_OIDC_*: playwright.config.ts, scripts/test); the page shows those settings, refuses
// an issuer it cannot discover (naming it, changing nothing), saves the right one with one
// more scope, and sign-in through the provider keeps working under the saved settings. The
// client secret never reaches the browser, and the audit log shows it masked.
//
// The settings are the whole server's: this spec runs on one project and puts the config
// file's settings back at the end (and in afterAll, should a step fail), so the other specs
// find the provider as configured.

const stamp = Date.now().toString(36);
// A person of our own at the provider (created through its test hook), so no other spec's
// accounts are touched.
const login = `idset-${stamp}`;
const email = `${login}@example.com`;
// Nothing listens here inside the test's network namespace.
const unreachable = "http://127.0.0.1:18499";
// The secret the server was started with (scripts/test, playwright.config.ts).
const fileSecret = "oxiscale-e2e-secret";

test.describe.configure({ mode: "default" });

test.beforeEach(async ({}, testInfo) => {
  test.skip(testInfo.project.name !== "desktop", "one server-wide setting; one viewport is enough");
});

/** Puts the config file's settings back through the server function, as the page's button does. */
async function resetToConfigFile(page: Page) {
  const csrf = csrfFrom(await (await page.request.get("/settings/identity")).text());
  const response = await page.request.post("/console/fn/identity/reset", {
    headers: { "x-csrf-token": csrf, "content-type": "application/x-www-form-urlencoded" },
    data: "",
  });
  expect(response.status(), await response.text()).toBe(200);
}

test.afterAll(async ({ browser }, testInfo) => {
  if (testInfo.project.name !== "desktop") return;
  // afterAll has no signed-in `page`: sign in once more (the context's request shares its cookies).
  const context = await browser.newContext({ baseURL: testInfo.project.use.baseURL, storageState: signedOut });
  try {
    await signIn(context.request);
    await resetToConfigFile(await context.newPage());
  } finally {
    await context.close();
  }
  await fetch(`${oidcIssuer}/test/accounts/${login}`, { method: "DELETE" }).catch(() => {});
  const user = listUsers().find((u) => u.email === email);
  if (user) oxiscaleCli(["users", "destroy", "-i", String(user.id), "--force"]);
});

async function openIdentity(page: Page) {
  await page.goto("/settings/identity");
  await expect(page.getByRole("heading", { level: 1, name: "Identity" })).toBeVisible();
  await expect(page.locator('form.identity-form[data-ready="true"]')).toBeVisible();
}

test("identity settings: shown from the config, a wrong issuer refused by name, a new scope saved, sign-in still works", async ({ page, browser }, testInfo) => {
  test.setTimeout(120_000);
  await providerHook(`accounts/${login}`, {
    email,
    email_verified: true,
    name: "Identity Settings",
    preferred_username: login,
    groups: ["sales"],
  });

  // What the server started with: the provider from the config, a secret that is set but
  // never sent to the browser.
  await openIdentity(page);
  const issuer = page.getByLabel("Issuer URL");
  await expect(issuer).toHaveValue(oidcIssuer);
  await expect(page.getByLabel("Client ID", { exact: true })).toHaveValue("oxiscale");
  await expect(page.locator("#identity-source")).toContainText("config file");
  await expect(page.locator("#identity-status")).toContainText(`On: people and machines sign in through ${oidcIssuer}`);
  const secret = page.getByLabel("Client secret");
  await expect(secret).toHaveAttribute("type", "password");
  await expect(secret).toHaveValue("");
  await expect(secret).toHaveAttribute("placeholder", /A secret is set/);
  await expect(page.locator("#identity-redirect-uri")).toHaveText(/\/oidc\/callback$/);
  await expect(page.getByLabel("Allowed email domains")).toHaveValue("example.com");
  expect(await page.content(), "the secret is not in the page").not.toContain(fileSecret);
  await page.screenshot({ path: testInfo.outputPath("identity.png"), fullPage: true });
  await testInfo.attach("identity page", { path: testInfo.outputPath("identity.png"), contentType: "image/png" });

  try {
    // A provider that cannot be discovered: refused, named, nothing changed.
    await issuer.fill(unreachable);
    await page.getByRole("button", { name: "Save identity settings" }).click();
    const alert = page.getByRole("alert");
    await expect(alert).toContainText(`Not saved: the identity provider ${unreachable} could not be discovered`);
    await expect(alert).toContainText("nothing was changed");
    await openIdentity(page);
    await expect(issuer).toHaveValue(oidcIssuer);
    await expect(page.locator("#identity-source")).toContainText("config file");

    // The right issuer with one more scope, secret left empty (the one in force stays).
    await page.getByLabel("Scopes").fill("openid profile email groups");
    await page.getByRole("button", { name: "Save identity settings" }).click();
    await expect(page.locator(".identity-outcome [role=status]")).toContainText("Saved. The next sign-in uses these settings.");
    await expect(page.locator("#identity-source")).toContainText("saved here");
    await openIdentity(page);
    await expect(issuer).toHaveValue(oidcIssuer);
    await expect(page.getByLabel("Scopes")).toHaveValue("openid profile email groups");
    await expect(page.locator("#identity-source")).toContainText("saved here");
    await expect(secret).toHaveAttribute("placeholder", /A secret is set/);
    await expect(page.getByRole("button", { name: "Use the config file's settings" })).toBeVisible();

    // The audit log has the change, with the secret masked.
    await page.goto("/logs?action=oidc.");
    const entry = page.locator("tr[data-audit]").filter({ hasText: "oidc.set" }).first();
    await expect(entry).toBeVisible();
    await entry.getByText("Before and after").click();
    await expect(entry.getByLabel("After")).toContainText('"client_secret": "<set>"');
    await expect(entry.getByLabel("After")).toContainText('"groups"');
    expect(await page.content()).not.toContain(fileSecret);

    // Sign-in through the provider works under the saved settings, asking for the new scope.
    const context = await browser.newContext({ baseURL: testInfo.project.use.baseURL, storageState: signedOut });
    try {
      const person = await context.newPage();
      const start = await person.request.get("/login/oidc", { maxRedirects: 0 });
      expect(start.status()).toBe(303);
      expect(new URL(start.headers()["location"]).searchParams.get("scope")).toContain("groups");
      await signInThroughProvider(person, login);
      await expect(person).toHaveURL(/\/machines$/);
      await expect(person.getByRole("banner")).toContainText(`Signed in as ${email}`);
    } finally {
      await context.close();
    }

    // Back to the config file's settings with the page's own button.
    await openIdentity(page);
    await page.getByRole("button", { name: "Use the config file's settings" }).click();
    await expect(page.locator(".identity-outcome [role=status]")).toContainText("The config file's settings are in force again.");
    await expect(page.locator("#identity-source")).toContainText("config file");
    await openIdentity(page);
    await expect(page.getByLabel("Scopes")).toHaveValue("openid profile email");
    await expect(page.getByRole("button", { name: "Use the config file's settings" })).toHaveCount(0);
  } finally {
    await resetToConfigFile(page);
  }
});

test("only owners and admins reach the identity settings", async ({ browser }, testInfo) => {
  // An auditor reads everything else, but not who may sign in.
  const name = `idset-auditor-${stamp}`;
  const password = "e2e auditor correct horse battery";
  oxiscaleCli(["admins", "create", name, "--password-stdin", "--role", "auditor"], `${password}\n`);
  const context = await browser.newContext({ baseURL: testInfo.project.use.baseURL, storageState: signedOut });
  try {
    await signIn(context.request, name, password);
    const page = await context.newPage();
    await page.goto("/settings/identity");
    await expect(page.getByRole("alert")).toContainText("your console role (Auditor) does not allow this");
    await expect(page.locator("form.identity-form")).toHaveCount(0);
    const csrf = csrfFrom(await page.content());
    for (const endpoint of ["identity/get", "identity/reset"]) {
      const response = await page.request.post(`/console/fn/${endpoint}`, {
        headers: { "x-csrf-token": csrf, "content-type": "application/x-www-form-urlencoded" },
        data: "",
      });
      expect(response.status(), endpoint).toBe(403);
    }
  } finally {
    await context.close();
    oxiscaleCli(["admins", "delete", name]);
  }
});
