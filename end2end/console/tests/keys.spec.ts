import { createUser, expect, serverURL, test } from "./fixtures";

test("a pre-auth key is shown once with its join command, listed masked, and expires", async ({ page }, testInfo) => {
  const user = `keyuser-${testInfo.project.name}-${Date.now().toString(36)}`.toLowerCase();
  await createUser(page, user);

  await page.goto("/keys");
  const form = page.getByRole("form", { name: "Create a pre-auth key" });
  await expect(form.getByRole("button", { name: "Create pre-auth key" })).toBeEnabled();
  await form.getByLabel("User").selectOption({ label: user });
  await form.getByLabel("Reusable").check();
  await form.getByLabel("Expires in").fill("2h");
  await form.getByRole("button", { name: "Create pre-auth key" }).click();

  const secret = (await page.locator("#new-preauth-key").textContent())?.trim() ?? "";
  expect(secret.length).toBeGreaterThan(20);
  await expect(page.locator("#new-join-command")).toHaveText(
    `tailscale up --login-server=${serverURL} --authkey=${secret}`,
  );
  await expect(page.getByRole("button", { name: "Copy pre-auth key" })).toBeEnabled();
  await testInfo.attach("keys", { body: await page.screenshot({ fullPage: true }), contentType: "image/png" });

  // The list shows a masked form, never the secret; a reload cannot bring it back.
  const row = page.locator("tr[data-key]", { hasText: user });
  await expect(row).toHaveCount(1);
  await expect(row).toContainText("reusable");
  await page.reload();
  await expect(page.getByRole("heading", { level: 1, name: "Keys" })).toBeVisible();
  expect(await page.content()).not.toContain(secret);
  const html = await (await page.request.get("/keys")).text();
  expect(html).not.toContain(secret);

  // Expire: it moves from the usable list to "used or expired".
  const usable = page.locator("tr[data-key]", { hasText: user });
  await usable.getByRole("button", { name: /^Expire key/ }).click();
  await expect(page.locator("tr[data-key]", { hasText: user })).toContainText("expired");
  await expect(page.locator("tr[data-key]", { hasText: user }).getByRole("button")).toHaveCount(0);
});

test("a key needs a user or a tag", async ({ page }) => {
  await page.goto("/keys");
  const form = page.getByRole("form", { name: "Create a pre-auth key" });
  await expect(form.getByRole("button", { name: "Create pre-auth key" })).toBeEnabled();
  await form.getByLabel("User").selectOption({ value: "" });
  await form.getByRole("button", { name: "Create pre-auth key" }).click();
  await expect(form.getByRole("alert")).toContainText("choose a user, or give the key at least one tag");
  await expect(page.locator("#new-preauth-key")).toHaveCount(0);
});

test("an API key is shown once and can be expired", async ({ page }) => {
  await page.goto("/keys");
  const form = page.getByRole("form", { name: "Create an API key" });
  await expect(form.getByRole("button", { name: "Create API key" })).toBeEnabled();
  await form.getByRole("button", { name: "Create API key" }).click();
  const secret = (await page.locator("#new-api-key").textContent())?.trim() ?? "";
  expect(secret.length).toBeGreaterThan(20);
  // Listed by prefix; the secret begins with something the list shows, but is not in it.
  // The list is refetched after the create: wait for the new row.
  const rows = page.locator("tr[data-api-key]");
  let prefix: string | undefined;
  await expect
    .poll(async () => {
      const prefixes = await rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute("data-api-key") ?? ""));
      prefix = prefixes.find((p) => p && secret.includes(p));
      return prefix;
    }, { message: `a listed prefix of ${secret}` })
    .toBeTruthy();
  await page.reload();
  expect(await page.content()).not.toContain(secret);
  const row = page.locator(`tr[data-api-key="${prefix}"]`);
  await row.getByRole("button", { name: `Expire API key ${prefix}` }).click();
  await expect(page.locator(`tr[data-api-key="${prefix}"]`)).toContainText("expired");
});
