import { type Page, type TestInfo } from "@playwright/test";
import { createPreAuthKey, createUser, expect, startNode, test } from "./fixtures";

// The flow against the real server with a REAL tsnet node (caddy-tailscale, started
// by end2end/clients/node.py). scripts/test runs Playwright inside a private network
// namespace, so the node reaches nothing but this machine's loopback.

async function shot(page: Page, testInfo: TestInfo, name: string) {
  await testInfo.attach(name, { body: await page.screenshot({ fullPage: true }), contentType: "image/png" });
}

test("create a user and a key, a real node joins live, rename it, delete it", async ({ page }, testInfo) => {
  test.skip(testInfo.project.name !== "desktop", "one real node per run is enough");
  test.setTimeout(180_000);
  const stamp = Date.now().toString(36);
  const user = `flow-${stamp}`;
  const host = `flownode-${stamp}`;
  const renamed = `renamed-${stamp}`;

  await createUser(page, user);
  await shot(page, testInfo, "users");

  const authkey = await createPreAuthKey(page, user);
  expect(authkey).toMatch(/\S{20,}/);
  await shot(page, testInfo, "keys");

  // Open Machines first; the node must appear there without a reload.
  await page.goto("/machines");
  await expect(page.getByRole("heading", { level: 1, name: "Machines" })).toBeVisible();
  await page.waitForFunction(() => !document.querySelector("button.copy-button[disabled]"));
  let reloads = 0;
  page.on("load", () => reloads++);
  const node = startNode(authkey, host);
  try {
    const row = page.locator(`tr[data-machine="${host}"]`);
    await expect(row, `node output:\n${node.output()}`).toBeVisible({ timeout: 90_000 });
    await expect(row).toHaveAttribute("data-status", "online", { timeout: 60_000 });
    expect(reloads, "the row arrived without a page load").toBe(0);
    await expect(row).toContainText(user);
    await expect(row).toContainText(/100\.\d+\.\d+\.\d+/);
    await shot(page, testInfo, "machines");

    // Rename from the row's actions; the list and the detail page show the new name.
    await row.getByRole("button", { name: `Actions for ${host}` }).click();
    await row.getByRole("button", { name: `Rename ${host}` }).click();
    await row.getByLabel("New name").fill(renamed);
    await row.getByRole("button", { name: "Save name" }).click();
    const renamedRow = page.locator(`tr[data-machine="${renamed}"]`);
    await expect(renamedRow).toBeVisible();
    await renamedRow.getByRole("link", { name: renamed }).click();
    await expect(page).toHaveURL(/\/machines\/\d+$/);
    await expect(page.getByRole("heading", { level: 1 })).toContainText(renamed);
    const facts = page.locator("dl.facts").first();
    await expect(facts).toContainText(new RegExp(`${renamed}\\.`));
    await expect(facts).toContainText("Node key");
    await expect(facts).toContainText(/nodekey:[0-9a-f]{64}/);
    await shot(page, testInfo, "machine");

    // Delete with confirmation; the detail page goes back to the list, which no longer has it.
    await page.getByRole("button", { name: `Delete ${renamed}` }).click();
    await page.getByRole("button", { name: "Delete machine" }).click();
    await expect(page).toHaveURL(/\/machines$/);
    await expect(page.locator(`tr[data-machine="${renamed}"]`)).toHaveCount(0);
  } finally {
    node.stop();
  }
});
