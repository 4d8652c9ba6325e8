import { type Page } from "@playwright/test";
import { csrfFrom, expect, serverURL, test } from "./fixtures";

const joinCommand = `tailscale up --login-server=${serverURL} --authkey=<key>`;

/** Fails the test on any uncaught page error or console error (a failed hydration shows up here). */
function watchForErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on("pageerror", (err) => errors.push(`pageerror: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") errors.push(`console: ${msg.text()}`);
  });
  return errors;
}

/** The copy button, whatever it currently says ("Copy", "Copied", "Press Ctrl+C"). */
function copyButton(page: Page) {
  return page.getByRole("button", { name: /^(Copy|Copied|Press Ctrl\+C) join command$/ });
}

/** Waits until hydration has enabled the copy button, the console's hydration signal. */
async function hydrated(page: Page) {
  const copy = copyButton(page);
  await expect(copy).toBeEnabled();
  return copy;
}

test("machines page is complete in the server-rendered HTML", async ({ page }) => {
  const response = await page.request.get("/machines");
  expect(response.status()).toBe(200);
  expect(response.headers()["content-type"]).toContain("text/html");
  const html = await response.text();
  expect(html).toContain("<h1>Machines</h1>");
  expect(html).toContain("No machines yet");
  // HTML-escaped, exactly as the browser will show it.
  expect(html).toContain(joinCommand.replace("<", "&lt;").replace(">", "&gt;"));
  // Before hydration the copy button is present but cannot be used.
  expect(html).toMatch(/<button[^>]*disabled[^>]*class="[^"]*copy-button|<button[^>]*class="[^"]*copy-button[^"]*"[^>]*disabled/);
  // The page loads the hydration bundle under the names build-site.sh writes.
  expect(html).toContain("/pkg/oxiscale.js");
  expect(html).toContain("/pkg/oxiscale_bg.wasm");
  expect(html).toContain('href="/pkg/oxiscale.css"');
});

test("the root redirects browsers to Machines with a 302", async ({ page }) => {
  const response = await page.request.get("/", { headers: { accept: "text/html" }, maxRedirects: 0 });
  expect(response.status()).toBe(302);
  expect(response.headers()["location"]).toBe("/machines");
});

test("the page reads correctly with JavaScript disabled", async ({ browser, storageState }) => {
  const context = await browser.newContext({ javaScriptEnabled: false, storageState });
  const page = await context.newPage();
  await page.goto("/machines");
  await expect(page.getByRole("heading", { level: 1, name: "Machines" })).toBeVisible();
  await expect(page.locator("#join-command")).toHaveText(joinCommand);
  await expect(copyButton(page)).toHaveText("Copy join command");
  await expect(copyButton(page)).toBeDisabled();
  await context.close();
});

test("after hydration the copy button copies the join command", async ({ page, context }, testInfo) => {
  const errors = watchForErrors(page);
  await context.grantPermissions(["clipboard-read", "clipboard-write"]);
  await page.goto("/");
  // "/" redirects to the Machines page.
  await expect(page).toHaveURL(/\/machines$/);
  await expect(page).toHaveTitle("Machines · oxiscale");
  await expect(page.locator("#join-command")).toHaveText(joinCommand);

  const copy = await hydrated(page);
  await expect(copy).toHaveText("Copy join command");
  await copy.click();
  await expect(copy).toHaveText("Copied join command");
  await expect(page.getByRole("status")).toHaveText("Copied to the clipboard.");
  expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(joinCommand);
  // The confirmation goes away again.
  await expect(copy).toHaveText("Copy join command", { timeout: 6_000 });

  await page.screenshot({ path: testInfo.outputPath("machines.png"), fullPage: true });
  await testInfo.attach("machines", { path: testInfo.outputPath("machines.png"), contentType: "image/png" });
  expect(errors).toEqual([]);
});

test("without the Clipboard API the command is selected for Ctrl+C", async ({ page }) => {
  const errors = watchForErrors(page);
  // As on a plain-HTTP origin other than localhost, where navigator.clipboard is undefined.
  await page.addInitScript(() => {
    Object.defineProperty(Navigator.prototype, "clipboard", { get: () => undefined });
    // The button says "Press Ctrl+C" for a few seconds only; a slow browser could poll past
    // that window, so every state the button takes is recorded as it happens.
    const seen: string[] = [];
    (window as any).copyStates = seen;
    new MutationObserver((records) => {
      for (const r of records) {
        const button = r.target as Element;
        const state = button.getAttribute("data-state");
        // Hydration writes "idle" once too; what matters is what the click leads to.
        if (state !== "idle") seen.push(`${state}: ${button.textContent}`);
      }
    }).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-state"] });
  });
  await page.goto("/machines");
  const copy = await hydrated(page);
  await copy.click();
  await page.waitForFunction(() => (window as any).copyStates.length > 0);
  expect(await page.evaluate(() => (window as any).copyStates[0])).toBe("selected: Press Ctrl+C join command");
  expect(await page.evaluate(() => window.getSelection()?.toString())).toBe(joinCommand);
  expect(errors).toEqual([]);
});

test("navigation is client-side after hydration and marks the current section", async ({ page }) => {
  const errors = watchForErrors(page);
  await page.goto("/machines");
  await hydrated(page);
  const nav = page.getByRole("navigation", { name: "Main" });
  await expect(nav.getByRole("link", { name: "Machines" })).toHaveAttribute("aria-current", "page");

  // A marker on window survives only if the router navigates without a page load.
  await page.evaluate(() => ((window as unknown as { marker: number }).marker = 42));
  await nav.getByRole("link", { name: "Access controls" }).click();
  await expect(page).toHaveURL(/\/acls$/);
  await expect(page.getByRole("heading", { level: 1 })).toHaveText("Access controls");
  await expect(page.getByLabel("Policy (HuJSON)")).toBeVisible();
  await expect(nav.getByRole("link", { name: "Access controls" })).toHaveAttribute("aria-current", "page");
  await expect(nav.getByRole("link", { name: "Machines" })).not.toHaveAttribute("aria-current", "page");
  expect(await page.evaluate(() => (window as unknown as { marker?: number }).marker)).toBe(42);
  expect(errors).toEqual([]);
});

test("keyboard: skip link first, then the navigation, copy button reachable", async ({ page }, testInfo) => {
  test.skip(testInfo.project.name === "phone", "no hardware keyboard on the phone profile");
  await page.goto("/machines");
  const copy = await hydrated(page);
  await page.keyboard.press("Tab");
  await expect(page.getByRole("link", { name: "Skip to content" })).toBeFocused();
  await page.keyboard.press("Tab");
  await expect(page.getByRole("link", { name: "oxiscale" })).toBeFocused();
  await page.keyboard.press("Tab");
  await expect(page.getByRole("link", { name: "Machines" })).toBeFocused();
  // Machines, Users, Access controls, DNS, Keys, Identity, Logs, Sign out.
  for (let i = 0; i < 6; i++) await page.keyboard.press("Tab");
  await page.keyboard.press("Tab");
  await expect(page.getByRole("button", { name: "Sign out" })).toBeFocused();
  // The device approval switch, the "Keys" link in the text, then Copy.
  for (let i = 0; i < 3; i++) await page.keyboard.press("Tab");
  await expect(copy).toBeFocused();
  await page.keyboard.press("Enter");
  // Without clipboard permission in this context either outcome proves the key worked.
  await expect(copy).not.toHaveText("Copy join command");
});

test("fits a phone screen without sideways scrolling", async ({ page }, testInfo) => {
  await page.goto("/machines");
  await hydrated(page);
  const overflow = await page.evaluate(
    () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
  );
  expect(overflow).toBeLessThanOrEqual(0);
  await page.screenshot({ path: testInfo.outputPath("machines-viewport.png") });
});

test("server function answers over HTTP under /console/fn", async ({ page }) => {
  const token = csrfFrom(await (await page.request.get("/machines")).text());
  const response = await page.request.post("/console/fn/config", {
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      accept: "application/json",
      "x-csrf-token": token,
    },
    data: "",
  });
  expect(response.status()).toBe(200);
  expect(await response.json()).toEqual({ server_url: serverURL });
});

test("unknown console paths get the not-found page with status 404", async ({ page }) => {
  const response = await page.request.get("/no-such-page");
  expect(response.status()).toBe(404);
  expect(await response.text()).toContain("Page not found");
});

test("pages run only the scripts they were served with: a nonce per response", async ({ page }) => {
  await page.addInitScript(() => {
    const seen: string[] = [];
    (window as unknown as { cspViolations: string[] }).cspViolations = seen;
    document.addEventListener("securitypolicyviolation", (e) =>
      seen.push(`${e.violatedDirective} ${e.blockedURI}`),
    );
  });
  const errors = watchForErrors(page);

  const first = await page.request.get("/machines");
  const second = await page.request.get("/machines");
  const policy = first.headers()["content-security-policy"];
  const nonce = /script-src 'nonce-([^']+)' 'strict-dynamic' 'wasm-unsafe-eval'/.exec(policy)?.[1];
  expect(nonce, policy).toBeTruthy();
  expect(policy).toContain("frame-ancestors 'none'");
  expect(await first.text()).toContain(`<script type="module" nonce="${nonce}">`);
  expect(second.headers()["content-security-policy"]).not.toContain(nonce!);

  // Every page hydrates under it (a blocked script shows as a violation or an error).
  for (const path of ["/users", "/keys", "/acls", "/dns", "/settings/identity", "/logs"]) {
    await page.goto(path);
    await page.waitForLoadState("networkidle");
  }
  await page.goto("/machines");
  await hydrated(page);
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Users" }).click();
  await expect(page).toHaveURL(/\/users$/);
  expect(await page.evaluate(() => (window as unknown as { cspViolations: string[] }).cspViolations)).toEqual([]);
  expect(errors).toEqual([]);
});
