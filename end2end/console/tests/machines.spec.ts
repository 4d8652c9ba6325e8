import { type Page } from "@playwright/test";
import { createPreAuthKey, createUser, expect, oxiscaleCli, startNode, test } from "./fixtures";

// The machine list and its actions against the real server with one real tsnet node
// (end2end/clients/node.py), registered through keys made in the UI.
test.describe.configure({ mode: "serial" });

let stopNode = () => {};
const stamp = Date.now().toString(36);
const user = `mach-${stamp}`;
const host = `machnode-${stamp}`;

async function hydratedList(page: Page, url: string) {
  await page.goto(url);
  await expect(page.getByRole("heading", { level: 1, name: "Machines" })).toBeVisible();
  await expect(page.getByRole("button", { name: `Actions for ${host}` })).toBeEnabled({ timeout: 30_000 });
}

// Set to measure time to interactive against a server seeded with many machines
// (scripts/console-tti.sh seeds one and sets it); then only that measurement runs.
const measureTTI = !!process.env.OXISCALE_E2E_TTI;

test.beforeAll(async ({ browser }, testInfo) => {
  if (testInfo.project.name !== "desktop" || measureTTI) return;
  testInfo.setTimeout(150_000);
  const page = await browser.newPage();
  await createUser(page, user);
  const authkey = await createPreAuthKey(page, user);
  const node = startNode(authkey, host);
  stopNode = () => node.stop();
  expect(authkey, "the new key's secret").toMatch(/\S{20,}/);
  await page.goto("/machines");
  await expect(page.locator(`tr[data-machine="${host}"]`), `node output:\n${node.output()}`).toHaveAttribute("data-status", "online", { timeout: 120_000 });
  await page.close();
});

// Delete the machine through the UI (other specs expect an empty tailnet), then stop it.
test.afterAll(async ({ browser }, testInfo) => {
  if (testInfo.project.name !== "desktop" || measureTTI) return;
  const page = await browser.newPage();
  try {
    await hydratedList(page, `/machines?q=${host}`);
    const row = page.locator(`tr[data-machine="${host}"]`);
    await row.getByRole("button", { name: `Actions for ${host}` }).click();
    await row.getByRole("button", { name: `Delete ${host}` }).click();
    await row.getByRole("button", { name: "Delete machine" }).click();
    await expect(page.locator(`tr[data-machine="${host}"]`)).toHaveCount(0);
  } finally {
    stopNode();
    await page.close();
  }
});

test.beforeEach(async ({}, testInfo) => {
  test.skip(testInfo.project.name !== "desktop", "the real node is registered once, on desktop");
  test.skip(measureTTI && testInfo.title !== ttiTitle, "measuring time to interactive only");
});

// The test node's id, from the CLI.
function nodeId(): string {
  const nodes = JSON.parse(oxiscaleCli(["nodes", "list", "-o", "json"])) as { id: number; given_name: string }[];
  return String(nodes.find((n) => n.given_name === host)!.id);
}

const ttiTitle = "time to interactive of /machines (prints the figure)";
test(ttiTitle, async ({ page }) => {
  test.skip(!measureTTI, "set OXISCALE_E2E_TTI=1 against a seeded server");
  const runs: number[] = [];
  for (let i = 0; i < 5; i++) {
    const start = Date.now();
    await page.goto("/machines", { waitUntil: "commit" });
    // Interactive: hydrated, so the first row's action button is enabled.
    await expect(page.locator("button.machine-actions__toggle").first()).toBeEnabled({ timeout: 60_000 });
    runs.push(Date.now() - start);
  }
  const count = await page.getByRole("status").filter({ hasText: "machines" }).first().textContent();
  const nav = await page.evaluate(() => {
    const e = performance.getEntriesByType("navigation")[0] as PerformanceNavigationTiming;
    return { ttfb: Math.round(e.responseStart), domContentLoaded: Math.round(e.domContentLoadedEventEnd) };
  });
  const sorted = [...runs].sort((a, b) => a - b);
  console.log(`TTI /machines (${count}): runs ${runs.join(", ")} ms; median ${sorted[2]} ms; last TTFB ${nav.ttfb} ms, DOMContentLoaded ${nav.domContentLoaded} ms`);
  expect(runs.length).toBe(5);
});

test("filters live in the URL and survive a reload", async ({ page }, testInfo) => {
  await hydratedList(page, "/machines");
  await page.getByRole("searchbox", { name: "Search" }).fill(host);
  await page.getByRole("button", { name: "Search" }).click();
  await expect(page).toHaveURL(new RegExp(`[?&]q=${host}`));
  await page.getByLabel("Status").selectOption("online");
  await expect(page).toHaveURL(/status=online/);
  await expect(page.locator(`tr[data-machine="${host}"]`)).toBeVisible();
  await expect(page.locator("tbody tr")).toHaveCount(1);
  await page.getByLabel("User").selectOption(user);
  await expect(page).toHaveURL(new RegExp(`user=${user}`));

  await page.reload();
  await expect(page.getByRole("searchbox", { name: "Search" })).toHaveValue(host);
  await expect(page.getByLabel("Status")).toHaveValue("online");
  await expect(page.getByLabel("User")).toHaveValue(user);
  await expect(page.locator("tbody tr")).toHaveCount(1);
  await testInfo.attach("machines-filtered", { body: await page.screenshot({ fullPage: true }), contentType: "image/png" });

  // A filter that excludes it: no rows, and the count says so.
  await page.goto(`/machines?q=${host}&status=offline`);
  await expect(page.locator(`tr[data-machine="${host}"]`)).toHaveCount(0);
  await expect(page.getByRole("status").filter({ hasText: "match" })).toContainText("0 of");
});

test("the row shows owner, addresses with copy buttons, OS and status", async ({ page }) => {
  await hydratedList(page, `/machines?q=${host}`);
  const row = page.locator(`tr[data-machine="${host}"]`);
  await expect(row).toContainText(user);
  await expect(row).toContainText(/100\.\d+\.\d+\.\d+/);
  await expect(row).toContainText(/fd7a:/);
  await expect(row.getByRole("button", { name: /address$/ })).toHaveCount(2);
  await expect(row).toContainText("linux");
  await expect(row).toContainText("Online");
});

test("expire the key, then disable expiry", async ({ page }) => {
  await hydratedList(page, `/machines?q=${host}`);
  const row = page.locator(`tr[data-machine="${host}"]`);
  await row.getByRole("button", { name: `Actions for ${host}` }).click();
  await row.getByRole("button", { name: `Expire key of ${host}` }).click();
  await expect(page.locator(`tr[data-machine="${host}"]`)).toHaveAttribute("data-status", "expired");
  const again = page.locator(`tr[data-machine="${host}"]`);
  await again.getByRole("button", { name: `Actions for ${host}` }).click();
  await again.getByRole("button", { name: `Disable key expiry of ${host}` }).click();
  await expect(page.locator(`tr[data-machine="${host}"]`)).toContainText("No expiry");
  await expect(page.locator(`tr[data-machine="${host}"]`)).not.toHaveAttribute("data-status", "expired");
});

test("the detail page lists the machine's attributes", async ({ page }, testInfo) => {
  await hydratedList(page, `/machines?q=${host}`);
  await page.getByRole("link", { name: host }).click();
  await expect(page).toHaveURL(/\/machines\/\d+$/);
  await expect(page.getByRole("heading", { level: 1 })).toContainText(host);
  for (const label of ["MagicDNS name", "Owner", "Addresses", "OS", "Client version", "Last seen", "Created", "Node key", "Machine key", "Home DERP region", "Endpoints"]) {
    await expect(page.locator("dl.facts dt", { hasText: label }).first()).toBeVisible();
  }
  await expect(page.locator("dl.facts").first()).toContainText(/mkey:[0-9a-f]{64}/);
  await expect(page.getByRole("heading", { name: "Routes" })).toBeVisible();
  await expect(page.getByRole("heading", { name: "Network" })).toBeVisible();
  await testInfo.attach("machine", { body: await page.screenshot({ fullPage: true }), contentType: "image/png" });
});

test("a live update keeps an open panel and what was typed", async ({ page }) => {
  await hydratedList(page, `/machines?q=${host}`);
  const row = page.locator(`tr[data-machine="${host}"]`);
  await row.getByRole("button", { name: `Actions for ${host}` }).click();
  await row.getByRole("button", { name: `Rename ${host}` }).click();
  await row.getByLabel("New name").fill("half-typed-name");
  // A change made elsewhere (the CLI) reaches the page live and the list is refetched.
  oxiscaleCli(["nodes", "expire", "-i", nodeId(), "-e", "2099-01-02T03:04:05Z"]);
  await expect(row, "the row shows the new expiry without a reload").toContainText("2099");
  await expect(row.getByLabel("New name"), "the open panel kept what was typed").toHaveValue("half-typed-name");
  await row.getByRole("button", { name: `Rename ${host}` }).click();
  await expect(row.getByLabel("New name")).toHaveCount(0);
});

// Last: a tagged machine belongs to its tags, not the user, for good.
test("edit tags: the machine is then owned by its tag", async ({ page }) => {
  await hydratedList(page, `/machines?q=${host}`);
  const row = page.locator(`tr[data-machine="${host}"]`);
  // A live update (the node's own traffic) may rebuild the row between typing and saving;
  // what was typed into the row it replaced is gone with it, and "Save" sends no tags (a
  // no-op for this machine). Until the tag is saved: open the panel if it is closed, type,
  // save.
  await expect(async () => {
    const tags = row.getByLabel(/^Tags/);
    if (!(await tags.isVisible())) {
      const edit = row.getByRole("button", { name: `Edit tags of ${host}` });
      if (!(await edit.isVisible())) await row.getByRole("button", { name: `Actions for ${host}` }).click();
      await edit.click();
    }
    await tags.fill("tag:web");
    await row.getByRole("button", { name: "Save tags" }).click();
    await expect(row.getByRole("cell").nth(1)).toHaveText("tag:web", { timeout: 3000 });
  }).toPass({ timeout: 30_000 });
  // The tag filter finds it, and the URL says so.
  await page.locator("select[name=tag]").selectOption("tag:web");
  await expect(page).toHaveURL(/tag=tag%3Aweb/);
  await expect(page.locator(`tr[data-machine="${host}"]`)).toBeVisible();
  // An invalid tag is refused with the server's reason.
  const again = page.locator(`tr[data-machine="${host}"]`);
  await again.getByRole("button", { name: `Actions for ${host}` }).click();
  await again.getByRole("button", { name: `Edit tags of ${host}` }).click();
  await again.getByLabel(/^Tags/).fill("not a tag");
  await again.getByRole("button", { name: "Save tags" }).click();
  const refusal = again.getByRole("alert");
  await expect(refusal).not.toBeEmpty();
  const reason = (await refusal.textContent())!;
  // A live update redraws the row; the refusal and what was typed stay on it.
  // (Approving the exit routes is a change any policy allows; the row shows a badge.)
  oxiscaleCli(["nodes", "approve-routes", "-i", nodeId(), "-r", "0.0.0.0/0,::/0"]);
  await expect(again, "the row shows the approval without a reload").toContainText("Exit node");
  await expect(again.getByRole("alert")).toHaveText(reason);
  await expect(again.getByLabel(/^Tags/)).toHaveValue("not a tag");
});
