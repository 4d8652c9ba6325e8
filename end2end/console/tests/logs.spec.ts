import { admin, expect, test } from "./fixtures";

// The audit log page against the real server: a change made on the Users page shows up with
// the signed-in account as its actor, the before and after, and the filters narrow the list
// through the URL. All specs share one server, so the names are unique per run and project.
const unique = (base: string, project: string) =>
  `${base}-${project}-${Date.now().toString(36)}`.toLowerCase();

test("a rename shows in the log with who made it, and the filters narrow it", async ({ page }, testInfo) => {
  const name = unique("lena", testInfo.project.name);
  const renamed = `${name}-r`;
  await page.goto("/users");
  const form = page.getByRole("form", { name: "Create a user" });
  await expect(form.getByRole("button", { name: "Create user" })).toBeEnabled();
  await form.getByLabel("Name", { exact: true }).fill(name);
  await form.getByRole("button", { name: "Create user" }).click();
  const row = page.locator(`tr[data-user="${name}"]`);
  await expect(row).toBeVisible();
  await row.getByRole("button", { name: `Rename ${name}` }).click();
  await row.getByLabel("New name").fill(renamed);
  await row.getByRole("button", { name: "Save name" }).click();
  await expect(page.locator(`tr[data-user="${renamed}"]`)).toBeVisible();

  await page.goto(`/logs?action=user.rename&target=`);
  await expect(page.getByRole("heading", { level: 1, name: "Logs" })).toBeVisible();
  const entry = page.locator("tr[data-audit]").filter({ hasText: renamed }).first();
  await expect(entry).toBeVisible();
  await expect(entry).toContainText(admin.name);
  await expect(entry).toContainText("local account");
  await expect(entry).toContainText("user.rename");
  await entry.getByText("Before and after").click();
  await expect(entry.getByLabel("Before")).toContainText(`"name": "${name}"`);
  await expect(entry.getByLabel("After")).toContainText(`"name": "${renamed}"`);
  // Only renames are listed, and the filter is kept in the form.
  for (const action of await page.locator("tr[data-audit] code").allTextContents()) {
    expect(action).toBe("user.rename");
  }
  await expect(page.getByRole("form", { name: "Filter the log" }).getByLabel("Action")).toHaveValue("user.rename");

  // A filter typed in the form reaches the URL and narrows the list to nothing.
  await page.getByRole("form", { name: "Filter the log" }).getByLabel("Actor").fill("nobody-made-this");
  await page.getByRole("button", { name: "Filter" }).click();
  await expect(page).toHaveURL(/actor=nobody-made-this/);
  await expect(page.getByText("No changes match.")).toBeVisible();
  await testInfo.attach("logs", { body: await page.screenshot({ fullPage: true }), contentType: "image/png" });
});
