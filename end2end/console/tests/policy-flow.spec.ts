import { writeFileSync } from "node:fs";
import { type Page } from "@playwright/test";
import { createPreAuthKey, createUser, expect, oxiscaleCli, startNode, test, waitBlocked, waitReach } from "./fixtures";

// Issue #4: "type a valid policy, save it, and the real node's access changes", in the browser.
// Two REAL tsnet nodes (caddy-tailscale via end2end/clients/node.py, as in
// end2end/clients/test_policy.py): alice's node and bob's node each answer on tailnet port 80
// with their hostname and proxy to the other by MagicDNS name, so a request to a node's local
// proxy crosses the tailnet and the receiving node's packet filter decides. The policy is
// saved in the ACL editor only; the traffic is the proof that the server enforces it.

/** Types `policy` into the editor, reviews the diff and saves it. */
async function savePolicy(page: Page, policy: string, marker: string) {
  await page.goto("/acls");
  await expect(page.locator('.acl-actions[data-ready="true"]').first()).toBeVisible();
  const editor = page.getByLabel("Policy (HuJSON)");
  await editor.fill(policy);
  await expect(page.locator("#policy-status")).toContainText("The policy parses and passes its checks.");
  await page.getByRole("button", { name: "Review changes" }).click();
  await expect(page.getByRole("table", { name: "Line diff" })).toContainText(marker);
  await page.getByRole("button", { name: "Save policy" }).click();
  await expect(page.getByRole("status")).toContainText("Saved: the new policy is in force.");
}

/** One accept rule from `src`'s machines to `dst`'s port 80; tag:web stays assignable for the
 * other specs. */
function onlyRule(marker: string, src: string, dst: string): string {
  return (
    `// ${marker}\n{\n  "tagOwners": {"tag:web": []},\n` +
    `  "acls": [\n    {"action": "accept", "src": ["${src}@"], "dst": ["${dst}@:80"]},\n  ],\n}\n`
  );
}

test("a policy saved in the editor changes what real nodes can reach", async ({ page }, testInfo) => {
  test.skip(testInfo.project.name !== "desktop", "two real nodes per run are enough; the layout is not the point");
  test.setTimeout(300_000);
  const stamp = Date.now().toString(36);
  const alice = `alice-${stamp}`;
  const bob = `bob-${stamp}`;
  const hostA = `pol-a-${stamp}`;
  const hostB = `pol-b-${stamp}`;

  // The peers' MagicDNS names, from the DNS settings in force.
  await page.goto("/dns");
  await expect(page.locator('form.dns-form[data-ready="true"]')).toBeVisible();
  await expect(page.locator("#dns-magic"), "MagicDNS must be on for the nodes to find each other").toBeChecked();
  const base = (await page.locator("#dns-base-domain").inputValue()).replace(/\.$/, "");
  expect(base).not.toBe("");
  const dnsA = `${hostA}.${base}`;
  const dnsB = `${hostB}.${base}`;

  await createUser(page, alice);
  await createUser(page, bob);
  const keyA = await createPreAuthKey(page, alice);
  const keyB = await createPreAuthKey(page, bob);
  expect(keyA).toMatch(/\S{20,}/);
  expect(keyB).toMatch(/\S{20,}/);

  const before = JSON.parse(oxiscaleCli(["policy", "get", "-o", "json"])).policy as string | null;
  const nodeA = startNode(keyA, hostA, [dnsB]);
  const nodeB = startNode(keyB, hostB, [dnsA]);
  try {
    await page.goto("/machines");
    for (const [host, node] of [[hostA, nodeA], [hostB, nodeB]] as const) {
      await expect(page.locator(`tr[data-machine="${host}"]`), `node output:\n${node.output()}`).toHaveAttribute("data-status", "online", { timeout: 120_000 });
    }
    const aToB = await nodeA.proxyURL(dnsB);
    const bToA = await nodeB.proxyURL(dnsA);

    // alice -> bob:80 only.
    const first = `e2e-policy-flow-alice-to-bob-${stamp}`;
    await savePolicy(page, onlyRule(first, alice, bob), first);
    await testInfo.attach("acls-alice-to-bob", { body: await page.screenshot({ fullPage: true }), contentType: "image/png" });
    await waitReach(aToB, hostB, `${hostA} -> ${hostB} is allowed`);
    await waitBlocked(bToA, hostA, `${hostB} -> ${hostA} is blocked`);

    // The reverse, saved while both nodes stay connected: the access flips.
    const second = `e2e-policy-flow-bob-to-alice-${stamp}`;
    await savePolicy(page, onlyRule(second, bob, alice), second);
    await waitReach(bToA, hostA, `${hostB} -> ${hostA} is allowed after the edit`);
    await waitBlocked(aToB, hostB, `${hostA} -> ${hostB} is blocked after the edit`);
    expect(oxiscaleCli(["policy", "get"])).toContain(second);
    expect(nodeA.output() + nodeB.output(), "neither node died").not.toMatch(/caddy exited early/);

    // The preview of a grant not yet saved: what alice's machines get on bob's, a capability
    // among it, and which rule gives it.
    await page.goto("/acls");
    await expect(page.locator('.acl-actions[data-ready="true"]').first()).toBeVisible();
    await page.getByLabel("Policy (HuJSON)").fill(
      `{\n  "tagOwners": {"tag:web": []},\n  "grants": [\n` +
        `    {"src": ["${alice}@"], "dst": ["${bob}@"], "ip": ["tcp:80"]},\n` +
        `    {"src": ["${alice}@"], "dst": ["${bob}@"], "app": {"example.com/cap/e2e": [{}]}},\n  ],\n}\n`,
    );
    await page.locator("#acl-subject").selectOption({ label: `User ${alice}` });
    await page.getByRole("button", { name: "Preview", exact: true }).click();
    const row = page.locator(".acl-preview__table tr", { hasText: hostB });
    await expect(row).toContainText(":80");
    await expect(row.locator(".acl-preview__caps")).toContainText("example.com/cap/e2e");
    await expect(row).toContainText(`grants[1]: ${alice}@ → ${bob}@ (app)`);

    // Leave the tailnet empty for the other specs.
    for (const host of [hostA, hostB]) {
      const nodes: { id: number; name: string; given_name?: string }[] = JSON.parse(oxiscaleCli(["nodes", "list", "-o", "json"]));
      const id = nodes.find((n) => n.name === host || n.given_name === host)?.id;
      expect(id, `${host} is listed`).toBeDefined();
      oxiscaleCli(["nodes", "delete", "-i", String(id)]);
    }
  } finally {
    nodeA.stop();
    nodeB.stop();
    // Put back the policy the other specs ran under (or everyone-to-everything).
    const restore =
      before ?? `{"tagOwners": {"tag:web": []}, "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}\n`;
    const file = testInfo.outputPath("restore-policy.hujson");
    writeFileSync(file, restore);
    oxiscaleCli(["policy", "set", "--file", file]);
  }
});
