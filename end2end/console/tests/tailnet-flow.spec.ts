import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { type Page, type TestInfo } from "@playwright/test";
import { expect, test } from "./fixtures";

// The flow against the real server with a REAL tsnet node (caddy-tailscale, started
// by end2end/clients/node.py). scripts/test runs Playwright inside a private network
// namespace, so the node reaches nothing but this machine's loopback.
const serverURL = (
  process.env.OXISCALE_E2E_SERVER_URL ??
  process.env.OXISCALE_E2E_BASE_URL ??
  "http://127.0.0.1:3000"
).replace(/\/$/, "");
const nodeScript = path.resolve(__dirname, "../../clients/node.py");

/** A real node; `stop()` ends its whole process group. */
function startNode(authkey: string, hostname: string) {
  const state = mkdtempSync(path.join(tmpdir(), "oxnode-"));
  const proc: ChildProcess = spawn(
    "python3",
    [nodeScript, "--server", serverURL, "--authkey", authkey, "--hostname", hostname, "--state", state],
    { detached: true, stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  proc.stdout?.on("data", (d) => (output += d));
  proc.stderr?.on("data", (d) => (output += d));
  return {
    output: () => output,
    stop() {
      try {
        if (proc.pid) process.kill(-proc.pid, "SIGTERM");
      } catch {
        // already gone
      }
      setTimeout(() => rmSync(state, { recursive: true, force: true }), 12_000).unref();
    },
  };
}

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

  await page.goto("/users");
  const userForm = page.getByRole("form", { name: "Create a user" });
  await expect(userForm.getByRole("button", { name: "Create user" })).toBeEnabled();
  await userForm.getByLabel("Name", { exact: true }).fill(user);
  await userForm.getByRole("button", { name: "Create user" }).click();
  await expect(page.locator(`tr[data-user="${user}"]`)).toBeVisible();
  await shot(page, testInfo, "users");

  await page.goto("/keys");
  const keyForm = page.getByRole("form", { name: "Create a pre-auth key" });
  await expect(keyForm.getByRole("button", { name: "Create pre-auth key" })).toBeEnabled();
  await keyForm.getByLabel("User").selectOption({ label: user });
  await keyForm.getByRole("button", { name: "Create pre-auth key" }).click();
  const authkey = ((await page.locator("#new-preauth-key").textContent()) ?? "").trim();
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
