import { expect, test } from "./fixtures";

// The DNS page against the real server: a bad value is refused with the reason and changes
// nothing; a good one is saved, survives a reload (it is in the database) and is shown in
// the server's canonical form.

async function recordNames(page: import("@playwright/test").Page): Promise<string[]> {
  return page
    .locator("input[id^=dns-record-name]")
    .evaluateAll((els) => els.map((e) => (e as HTMLInputElement).value));
}

async function openDns(page: import("@playwright/test").Page) {
  await page.goto("/dns");
  await expect(page.getByRole("heading", { level: 1, name: "DNS" })).toBeVisible();
  await expect(page.locator('form.dns-form[data-ready="true"]')).toBeVisible();
}

test("DNS settings: bad input refused, good input saved and kept", async ({ page }, info) => {
  // Unique per project (desktop, phone): both run against the same server.
  const name = `nas-${info.project.name}.corp.example`;
  await openDns(page);

  await page.getByRole("button", { name: "Add record" }).click();
  const row = page.locator(".dns-row--record").last();
  await row.getByLabel("Name").fill(name);
  await row.getByLabel("Type").selectOption("A");
  await row.getByLabel("Address").fill("fd7a::1");
  await page.getByRole("button", { name: "Save DNS settings" }).click();
  await expect(page.getByRole("alert")).toContainText(`${name}: "fd7a::1" is not an IPv4 address`);

  // Nothing was stored.
  await openDns(page);
  expect(await recordNames(page)).not.toContain(name);

  await page.getByRole("button", { name: "Add record" }).click();
  const fresh = page.locator(".dns-row--record").last();
  await fresh.getByLabel("Name").fill(name.toUpperCase());
  await fresh.getByLabel("Address").fill("100.64.0.99");
  await page.locator("#dns-search-domains").fill(`corp.example\n${info.project.name}.example`);
  await page.getByRole("button", { name: "Save DNS settings" }).click();
  await expect(page.getByRole("status")).toContainText("Saved");

  await openDns(page);
  // Stored in lower case (canonical form), with its type and address.
  await expect(page.locator(".dns-row--record input[id^=dns-record-name]").last()).toHaveValue(name);
  await expect(page.locator(".dns-row--record input[id^=dns-record-value]").last()).toHaveValue("100.64.0.99");
  await expect(page.locator("#dns-search-domains")).toHaveValue(`corp.example\n${info.project.name}.example`);
  await page.screenshot({ path: info.outputPath("dns.png"), fullPage: true });
  await info.attach("dns page", { path: info.outputPath("dns.png"), contentType: "image/png" });
});
