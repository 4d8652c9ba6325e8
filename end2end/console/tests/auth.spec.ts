import { admin, csrfFrom, expect, signedOut, test } from "./fixtures";

test.describe("signed out", () => {
  test.use({ storageState: signedOut });

  test("a console page redirects to sign-in and returns there afterwards", async ({ page }) => {
    await page.goto("/users?tab=all");
    await expect(page).toHaveURL(/\/login\?next=%2Fusers%3Ftab%3Dall$/);
    await expect(page).toHaveTitle("Sign in · oxiscale");
    await expect(page.getByRole("heading", { level: 1, name: "Sign in" })).toBeVisible();
    // No navigation for signed-out visitors: every link would lead back here.
    await expect(page.getByRole("navigation", { name: "Main" })).toHaveCount(0);

    await page.getByLabel("Username").fill(admin.name);
    await page.getByLabel("Password").fill(admin.password);
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect(page).toHaveURL(/\/users\?tab=all$/);
    await expect(page.getByRole("navigation", { name: "Main" })).toBeVisible();
  });

  test("a wrong password is refused with a generic message", async ({ page }) => {
    await page.goto("/login");
    await page.getByLabel("Username").fill(admin.name);
    await page.getByLabel("Password").fill("not the password");
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect(page).toHaveURL(/\/login\?error=invalid/);
    await expect(page.getByRole("alert")).toHaveText("Wrong username or password.");
    // An unknown name reads exactly the same.
    await page.getByLabel("Username").fill("nobody-by-this-name");
    await page.getByLabel("Password").fill("not the password");
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect(page.getByRole("alert")).toHaveText("Wrong username or password.");
    // Still signed out.
    await page.goto("/machines");
    await expect(page).toHaveURL(/\/login\?next=%2Fmachines$/);
  });

  test("sign in, see the name in the header, sign out", async ({ page, context }) => {
    await page.goto("/login");
    // Before sign-in there is no session, only the sign-in form's CSRF cookie.
    const cookies = await context.cookies();
    expect(cookies.find((c) => c.name === "oxiscale_session")).toBeUndefined();
    const presign = cookies.find((c) => c.name === "oxiscale_presign");
    expect(presign?.httpOnly).toBe(true);
    expect(presign?.sameSite).toBe("Strict");

    await page.getByLabel("Username").fill(admin.name);
    await page.getByLabel("Password").fill(admin.password);
    await page.getByLabel("Password").press("Enter");
    await expect(page).toHaveURL(/\/machines$/);
    const header = page.getByRole("banner");
    await expect(header).toContainText(`Signed in as ${admin.name}`);
    const during = (await context.cookies()).find((c) => c.name === "oxiscale_session");
    expect(during?.value).toBeTruthy();
    expect(during?.httpOnly).toBe(true);
    expect(during?.sameSite).toBe("Lax");

    await header.getByRole("button", { name: "Sign out" }).click();
    await expect(page).toHaveURL(/\/login$/);
    await expect(page.getByRole("heading", { level: 1, name: "Sign in" })).toBeVisible();

    // The old session cookie is dead even if replayed.
    await context.addCookies([during!]);
    await page.goto("/machines");
    await expect(page).toHaveURL(/\/login\?next=%2Fmachines$/);
  });

  test("server functions answer 401 without a session", async ({ request }) => {
    const response = await request.post("/console/fn/config", {
      headers: { "content-type": "application/x-www-form-urlencoded" },
      data: "",
    });
    expect(response.status()).toBe(401);
  });

  test("the sign-in page works on a phone and by keyboard", async ({ page }, testInfo) => {
    await page.goto("/login");
    const overflow = await page.evaluate(
      () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
    );
    expect(overflow).toBeLessThanOrEqual(0);
    await expect(page.getByLabel("Username")).toBeFocused();
    if (testInfo.project.name !== "phone") {
      await page.keyboard.press("Tab");
      await expect(page.getByLabel("Password")).toBeFocused();
      await page.keyboard.press("Tab");
      await expect(page.getByRole("button", { name: "Sign in" })).toBeFocused();
    }
    await page.screenshot({ path: testInfo.outputPath("login.png") });
  });
});

test.describe("session ends while a page is open", () => {
  test.use({ storageState: signedOut });

  test("the next action sends the browser to sign in, and back afterwards", async ({ page, context }) => {
    await page.goto("/login?next=%2Fusers");
    await page.getByLabel("Username").fill(admin.name);
    await page.getByLabel("Password").fill(admin.password);
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect(page).toHaveURL(/\/users$/);
    const form = page.getByRole("form", { name: "Create a user" });
    await expect(form.getByRole("button", { name: "Create user" })).toBeEnabled();

    // The session ends (cookie gone, as after an expiry or a sign-out elsewhere).
    await context.clearCookies();
    await form.getByLabel("Name", { exact: true }).fill(`never-${Date.now().toString(36)}`);
    await form.getByRole("button", { name: "Create user" }).click();
    await expect(page).toHaveURL(/\/login\?next=%2Fusers$/);
    await page.getByLabel("Username").fill(admin.name);
    await page.getByLabel("Password").fill(admin.password);
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect(page).toHaveURL(/\/users$/);
  });
});

test("signed in, a POST without the CSRF token is refused with 403", async ({ page }) => {
  const headers = { "content-type": "application/x-www-form-urlencoded", accept: "application/json" };
  const without = await page.request.post("/console/fn/config", { headers, data: "" });
  expect(without.status()).toBe(403);
  const wrong = await page.request.post("/console/fn/config", {
    headers: { ...headers, "x-csrf-token": "not-the-token" },
    data: "",
  });
  expect(wrong.status()).toBe(403);
  const token = csrfFrom(await (await page.request.get("/machines")).text());
  const right = await page.request.post("/console/fn/config", {
    headers: { ...headers, "x-csrf-token": token },
    data: "",
  });
  expect(right.status()).toBe(200);
});

test("a signed-in visit to /login goes to the console", async ({ page }) => {
  await page.goto("/login");
  await expect(page).toHaveURL(/\/machines$/);
});
