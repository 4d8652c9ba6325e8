import { type Page } from "@playwright/test";
import { createPreAuthKey, createUser, expect, oxiscaleCli, startNode, test, waitBlocked, waitReach } from "./fixtures";

// Device approval with two REAL tsnet nodes (end2end/clients/node.py): turned on in the
// console, a new machine waits, nobody's peer and seeing none; approved from the machine
// list, traffic flows. Each node answers on tailnet port 80 with its hostname and proxies to
// the other by MagicDNS name, so the traffic is the proof.

async function setApproval(page: Page, on: boolean) {
  await page.goto("/machines");
  const button = page.getByRole("button", { name: `${on ? "Turn on" : "Turn off"} device approval` });
  const already = page.getByText(on ? "Device approval is on" : "Device approval is off");
  await expect(button.or(already).first()).toBeVisible();
  if (await already.isVisible()) return;
  await expect(button).toBeEnabled();
  await button.click();
  await expect(already).toBeVisible();
}

async function approve(page: Page, host: string) {
  await page.goto("/machines?status=waiting");
  const row = page.locator(`tr[data-machine="${host}"]`);
  await expect(row).toHaveAttribute("data-status", "waiting");
  await row.getByRole("button", { name: `Actions for ${host}` }).click();
  await row.getByRole("button", { name: `Approve ${host}` }).click();
  await expect(page.locator(`tr[data-machine="${host}"]`)).toHaveCount(0); // no longer waiting
}

test("with device approval on, a new machine waits until it is approved in the machine list", async ({ page }, testInfo) => {
  test.skip(testInfo.project.name !== "desktop", "two real nodes per run are enough; the layout is not the point");
  test.setTimeout(300_000);
  const stamp = Date.now().toString(36);
  const user = `appr-${stamp}`;
  const hostA = `appr-a-${stamp}`;
  const hostB = `appr-b-${stamp}`;

  await page.goto("/dns");
  await expect(page.locator('form.dns-form[data-ready="true"]')).toBeVisible();
  const base = (await page.locator("#dns-base-domain").inputValue()).replace(/\.$/, "");
  const [dnsA, dnsB] = [`${hostA}.${base}`, `${hostB}.${base}`];

  await createUser(page, user);
  const keyA = await createPreAuthKey(page, user);
  const keyB = await createPreAuthKey(page, user);
  await setApproval(page, true);
  const nodeA = startNode(keyA, hostA, [dnsB]);
  const nodeB = startNode(keyB, hostB, [dnsA]);
  try {
    // Both wait: listed as waiting, counted, and reachable by the filter.
    await page.goto("/machines");
    for (const [host, node] of [[hostA, nodeA], [hostB, nodeB]] as const) {
      await expect(page.locator(`tr[data-machine="${host}"]`), `node output:\n${node.output()}`).toHaveAttribute("data-status", "waiting", { timeout: 120_000 });
    }
    await expect(page.getByRole("link", { name: /machines are waiting for approval/ })).toBeVisible();
    await testInfo.attach("waiting", { body: await page.screenshot({ fullPage: true }), contentType: "image/png" });

    // A is approved; B still waits: A does not reach B.
    await approve(page, hostA);
    const aToB = await nodeA.proxyURL(dnsB);
    await waitBlocked(aToB, hostB, `${hostA} -> ${hostB} is blocked while ${hostB} waits`);
    const held = JSON.parse(oxiscaleCli(["nodes", "list", "-o", "json"])) as { name: string; approved: boolean }[];
    expect(held.find((n) => n.name === hostB)?.approved, "B waits").toBe(false);

    // B is approved: traffic flows both ways.
    await approve(page, hostB);
    await waitReach(aToB, hostB, `${hostA} -> ${hostB} once both are approved`);
    const bToA = await nodeB.proxyURL(dnsA);
    await waitReach(bToA, hostA, `${hostB} -> ${hostA} once both are approved`);

    // The audit log names the administrator who approved each.
    const approvals = oxiscaleCli(["audit", "export", "--action", "node.approve"])
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as { actor: { kind: string; name: string }; target: string });
    for (const host of [hostA, hostB]) {
      expect(approvals.find((e) => e.target.includes(host))?.actor, `approval of ${host}`).toEqual({ kind: "local_admin", name: "e2e-admin" });
    }
  } finally {
    nodeA.stop();
    nodeB.stop();
    await setApproval(page, false);
    // Other specs expect the tailnet they left.
    const nodes = JSON.parse(oxiscaleCli(["nodes", "list", "-o", "json"])) as { id: number; name: string }[];
    for (const n of nodes.filter((n) => n.name === hostA || n.name === hostB)) {
      oxiscaleCli(["nodes", "delete", "-i", String(n.id)]);
    }
  }
});
