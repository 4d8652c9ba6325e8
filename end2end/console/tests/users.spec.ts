import { expect, test } from "./fixtures";

// Users page against the real server: create, refuse a duplicate, rename, delete with
// confirmation. Names are unique per run and project, since all specs share one server.
const unique = (base: string, project: string) =>
  `${base}-${project}-${Date.now().toString(36)}`.toLowerCase();

test("create, rename and delete a user", async ({ page }, testInfo) => {
  const name = unique("ursula", testInfo.project.name);
  const renamed = `${name}-r`;
  await page.goto("/users");
  await expect(page.getByRole("heading", { level: 1, name: "Users" })).toBeVisible();
  const form = page.getByRole("form", { name: "Create a user" });
  await expect(form.getByRole("button", { name: "Create user" })).toBeEnabled();
  await form.getByLabel("Name", { exact: true }).fill(name);
  await form.getByLabel("Display name").fill("Ursula Tester");
  await form.getByRole("button", { name: "Create user" }).click();
  const row = page.locator(`tr[data-user="${name}"]`);
  await expect(row).toBeVisible();
  await expect(row).toContainText("Ursula Tester");
  await expect(row.getByRole("cell").nth(1)).toHaveText("0");

  // The same name again is refused with the server's reason, and nothing is added.
  await form.getByLabel("Name", { exact: true }).fill(name);
  await form.getByRole("button", { name: "Create user" }).click();
  await expect(form.getByRole("alert")).toContainText("already exists");
  await expect(page.locator(`tr[data-user="${name}"]`)).toHaveCount(1);

  await row.getByRole("button", { name: `Rename ${name}` }).click();
  await row.getByLabel("New name").fill(renamed);
  await row.getByRole("button", { name: "Save name" }).click();
  const renamedRow = page.locator(`tr[data-user="${renamed}"]`);
  await expect(renamedRow).toBeVisible();
  await expect(page.locator(`tr[data-user="${name}"]`)).toHaveCount(0);

  await renamedRow.getByRole("button", { name: `Delete ${renamed}` }).click();
  await expect(renamedRow.getByRole("group", { name: "Confirm delete" })).toContainText(
    "unused pre-auth keys are deleted too",
  );
  await testInfo.attach("users", { body: await page.screenshot({ fullPage: true }), contentType: "image/png" });
  await renamedRow.getByRole("button", { name: "Delete user" }).click();
  await expect(page.locator(`tr[data-user="${renamed}"]`)).toHaveCount(0);

  // Still gone after a reload: the server deleted it.
  await page.reload();
  await expect(page.getByRole("heading", { level: 1, name: "Users" })).toBeVisible();
  await expect(page.locator(`tr[data-user="${renamed}"]`)).toHaveCount(0);
});

test("an invalid user name is refused with a reason", async ({ page }) => {
  await page.goto("/users");
  const form = page.getByRole("form", { name: "Create a user" });
  await expect(form.getByRole("button", { name: "Create user" })).toBeEnabled();
  await form.getByLabel("Name", { exact: true }).fill("Not A Valid Name!");
  const answer = page.waitForResponse((r) => r.url().endsWith("/console/fn/user/create"));
  await form.getByRole("button", { name: "Create user" }).click();
  // The admin's mistake, not a server failure: 400, with the reason as the body.
  const response = await answer;
  expect(response.status()).toBe(400);
  expect(Object.keys(await response.json())).toEqual(["Refused"]);
  await expect(form.getByRole("alert")).not.toBeEmpty();
  await expect(page.locator('tr[data-user="Not A Valid Name!"]')).toHaveCount(0);
});
