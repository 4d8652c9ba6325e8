import { createPreAuthKey, createUser, expect, startRouter, test } from "./fixtures";

// Issue #4: "approve its advertised route", in the browser, with the approval checked where it
// matters: in the map the client receives.
//
// Why this client is not tsnet: caddy-tailscale (tsnet) cannot advertise routes; tsnet sets
// Hostinfo.RoutableIPs only from prefs it does not expose. So the machine here is the project's
// own protocol client, oxiscale-loadgen in `--scenarios hold` mode (loadgen/src/hold.rs): it
// speaks the real protocol (/key, ts2021 Noise, HTTP/2, register, zstd map stream), advertises
// 10.77.0.0/24 plus an exit node (0.0.0.0/0, ::/0) and prints a line when its OWN node in the
// map (Node.AllowedIPs) starts to carry a route. Like every client, it runs inside the test
// network namespace (scripts/test starts Playwright there).

const SUBNET = "10.77.0.0/24";
const EXIT = ["0.0.0.0/0", "::/0"];

test("approve an advertised route and exit node; the client's map carries them", async ({ page }, testInfo) => {
  test.skip(testInfo.project.name !== "desktop", "one route-advertising machine per run is enough; the layout is not the point");
  test.setTimeout(150_000);
  const stamp = Date.now().toString(36);
  const user = `routes-${stamp}`;
  const host = `router-${stamp}`;

  await createUser(page, user);
  const authkey = await createPreAuthKey(page, user);
  expect(authkey).toMatch(/\S{20,}/);

  const router = startRouter(authkey, host, [SUBNET, ...EXIT]);
  try {
    await router.waitFor(/^hold: registered .*map stream open$/m, 60_000);
    expect(router.output(), "nothing is approved before the click").not.toContain("route approved in map");

    // The list flags it as awaiting approval.
    await page.goto(`/machines?q=${host}`);
    const row = page.locator(`tr[data-machine="${host}"]`);
    await expect(row, `client output:\n${router.output()}`).toBeVisible({ timeout: 30_000 });
    await expect(row).toContainText(`Awaiting approval: ${SUBNET}`);

    // The detail page's routes card: each awaiting approval.
    await row.getByRole("link", { name: host }).click();
    await expect(page).toHaveURL(/\/machines\/\d+$/);
    const detail = page.url();
    const subnet = page.locator(`ul.routes li[data-route="${SUBNET}"]`);
    const exitNode = page.locator('ul.routes li[data-route="Exit node"]');
    await expect(subnet).toHaveAttribute("data-state", "awaiting approval");
    await expect(exitNode).toHaveAttribute("data-state", "awaiting approval");
    await testInfo.attach("routes-awaiting", { body: await page.screenshot({ fullPage: true }), contentType: "image/png" });

    // Approve the subnet route only.
    await page.getByRole("button", { name: `Approve ${SUBNET}` }).click();
    await expect(subnet).toHaveAttribute("data-state", "approved");
    await router.waitFor(new RegExp(`^hold: route approved in map: ${SUBNET.replace(/\./g, "\\.")}$`, "m"), 30_000);
    expect(router.output(), "the exit node is not approved yet").not.toMatch(/approved in map: (0\.0\.0\.0\/0|::\/0)/);

    // Stored: a fresh load of the page still says so.
    await page.goto(detail);
    await expect(subnet).toHaveAttribute("data-state", "approved");
    await expect(exitNode).toHaveAttribute("data-state", "awaiting approval");
    await expect(page.locator("section[aria-labelledby=machine-routes]")).toContainText(`Serving as primary for: ${SUBNET}`);

    // Then the exit node: both default routes reach the client.
    await page.getByRole("button", { name: "Approve Exit node" }).click();
    await expect(exitNode).toHaveAttribute("data-state", "approved");
    for (const route of EXIT) {
      await router.waitFor(new RegExp(`^hold: route approved in map: ${route.replace(/[./]/g, "\\$&")}$`, "m"), 30_000);
    }
    await page.goto(detail);
    await expect(subnet).toHaveAttribute("data-state", "approved");
    await expect(exitNode).toHaveAttribute("data-state", "approved");
    await testInfo.attach("routes-approved", { body: await page.screenshot({ fullPage: true }), contentType: "image/png" });
    expect(router.output(), "no route was withdrawn").not.toContain("withdrawn");

    // Leave the tailnet empty for the other specs: delete it from its page.
    await page.getByRole("button", { name: `Delete ${host}` }).click();
    await page.getByRole("button", { name: "Delete machine" }).click();
    await expect(page).toHaveURL(/\/machines$/);
    await expect(page.locator(`tr[data-machine="${host}"]`)).toHaveCount(0);
  } finally {
    router.stop();
  }
});
