import { expect, oxiscaleCli, test } from "./fixtures";

// The access-controls editor against the real server (run in database mode by scripts/test,
// so the policy is editable). The browser checks the text with the server's own policy crate
// compiled to WASM: a syntax error is shown at its line and cannot be saved; a valid policy is
// reviewed as a line diff, saved through the server and is then what the server enforces.

async function openAcls(page: import("@playwright/test").Page) {
  await page.goto("/acls");
  await expect(page.getByRole("heading", { level: 1, name: "Access controls" })).toBeVisible();
  await expect(page.locator('.acl-actions[data-ready="true"]').first()).toBeVisible();
}

test("policy editor: error at its line, save refused; valid policy diffed and saved", async ({ page }, info) => {
  const marker = `e2e-${info.project.name}-${Date.now()}`;
  await openAcls(page);
  const editor = page.getByLabel("Policy (HuJSON)");
  await expect(editor).toBeEditable();

  // Line 3 lacks the comma between "src" and "dst".
  await editor.fill(`{\n  "acls": [\n    {"action": "accept", "src": ["*"] "dst": ["*:*"]},\n  ],\n}\n`);
  const issue = page.locator("#policy-status").getByRole("alert");
  await expect(issue).toContainText("line 3");
  await expect(editor).toHaveAttribute("aria-invalid", "true");
  await expect(page.getByRole("button", { name: "Review changes" })).toBeDisabled();
  await expect(page.getByRole("button", { name: "Go to line 3" })).toBeVisible();
  await page.screenshot({ path: info.outputPath("acls-error.png"), fullPage: true });
  await info.attach("acls page with an error", { path: info.outputPath("acls-error.png"), contentType: "image/png" });
  // Nothing reached the server.
  expect(oxiscaleCli(["policy", "get"])).not.toContain('["*"] "dst"');

  // Everyone reaches everything, and tag:web stays assignable (machines.spec tags a machine).
  const policy =
    `// ${marker}\n{\n  "tagOwners": {"tag:web": []},\n` +
    `  "acls": [\n    {"action": "accept", "src": ["*"], "dst": ["*:*"]},\n  ],\n}\n`;
  await editor.fill(policy);
  await expect(page.locator("#policy-status")).toContainText("The policy parses and passes its checks.");
  await page.getByRole("button", { name: "Review changes" }).click();
  const diff = page.getByRole("table", { name: "Line diff" });
  await expect(diff).toContainText(marker);
  await page.getByRole("button", { name: "Save policy" }).click();
  await expect(page.getByRole("status")).toContainText("Saved: the new policy is in force.");

  // The server holds and enforces exactly this text, and it survives a reload of the page.
  expect(oxiscaleCli(["policy", "get"])).toContain(marker);
  await openAcls(page);
  await expect(page.getByLabel("Policy (HuJSON)")).toHaveValue(new RegExp(marker));
  await page.screenshot({ path: info.outputPath("acls.png"), fullPage: true });
  await info.attach("acls page", { path: info.outputPath("acls.png"), contentType: "image/png" });
});

test("policy whose tests fail is refused by the server and not stored", async ({ page }, info) => {
  await openAcls(page);
  const editor = page.getByLabel("Policy (HuJSON)");
  // Parses (the browser accepts it), but its own test expects port 80 where only 22 is open.
  const failing =
    `{\n  "tagOwners": {"tag:web": []},\n` +
    `  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:22"]}],\n` +
    `  "tests": [{"src": "100.64.0.1", "accept": ["100.64.0.2:80"]}],\n}\n`;
  await editor.fill(failing);
  await expect(page.locator("#policy-status")).toContainText("The policy parses and passes its checks.");
  await page.getByRole("button", { name: "Review changes" }).click();
  // Long unwrapped lines scroll inside the editor and the diff, never the page (on a phone
  // they once widened it until the editor lay over the review's buttons).
  const sideways = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expect(sideways, "the page does not scroll sideways").toBeLessThanOrEqual(0);
  await page.getByRole("button", { name: "Save policy" }).click();
  await expect(page.locator(".acl-result").getByRole("alert")).toContainText("Not saved");
  expect(oxiscaleCli(["policy", "get"])).not.toContain('"100.64.0.2:80"');
});
