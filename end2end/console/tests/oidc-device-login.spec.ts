import { writeFileSync } from "node:fs";
import { type APIResponse, type Page, type Response } from "@playwright/test";
import {
  expect,
  landOn,
  listUsers,
  nodeNamed,
  oidcIssuer as issuer,
  oxiscaleCli,
  providerHook,
  serverURL,
  signedOut,
  signInAtProvider,
  startNode,
  test,
  type UserJson,
} from "./fixtures";

// A machine joins through the organisation's OpenID provider, as `tailscale up` without a key
// does: a REAL tsnet node (caddy-tailscale via end2end/clients/node.py --interactive) prints
// its AuthURL, Chromium opens it signed out, the person signs in at a REAL provider
// (end2end/oidc/provider.mjs, panva's oidc-provider, started first by playwright.config.ts)
// and confirms on the server's page. The server runs with
// oidc.allowed_domains [example.com]; the provider's accounts are in end2end/oidc/accounts.json
// (password: `<login>-password`).
//
// Refusals use real nodes too: the project's own protocol client (oxiscale-loadgen) only
// registers with an auth key, and a key-less tsnet node shows its AuthURL about 5 s after
// start (tsnet polls for it every 5 s), which is cheap enough per test.

const callback = `${serverURL}/oidc/callback`;

/** Follows redirects from `first` with the browser's cookies (page.request) up to the
 * server's callback, which it does not open: returns the callback URL the provider sent. A test
 * can then open it twice or tamper with it. (page.route cannot hold the callback back:
 * Chromium follows redirect hops without asking Playwright's routes; tried with 1.65.) */
async function callbackFrom(page: Page, first: Promise<APIResponse>): Promise<URL> {
  let res = await first;
  for (let hop = 0; hop < 10; hop++) {
    const location = res.headers()["location"];
    expect(location, `${res.url()} answered ${res.status()} without a redirect`).toBeTruthy();
    const next = new URL(location, res.url());
    if (next.href.startsWith(`${callback}?`)) return next;
    res = await page.request.get(next.href, { maxRedirects: 0 });
  }
  throw new Error("no redirect to the callback after 10 hops");
}

/** Consents on the provider's consent page the browser shows, without following to the callback. */
const consentHeld = (page: Page) => callbackFrom(page, page.request.post(page.url(), { form: { prompt: "consent" }, maxRedirects: 0 }));

/** The refusal page's promise: 403, "Sign-in refused", a reason. */
async function expectRefused(page: Page, response: Response, reason: RegExp) {
  expect(response.status(), "a refused person gets 403").toBe(403);
  await expect(page.locator("p", { hasText: reason }).first()).toBeVisible();
}

/** Sign-in failed: 400 and a reason paragraph. */
async function expectFailed(page: Page, response: Response | null, status = 400) {
  expect(response?.status(), `a failed sign-in answers ${status}`).toBe(status);
  await expect(page.getByRole("heading", { level: 1 })).toHaveText("Sign-in failed");
  await expect(page.locator("p", { hasText: /\w{3,}/ }).first(), "a reason").toBeVisible();
}

const allowAll = `{"tagOwners": {"tag:web": []}, "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}\n`;

// One worker, in order: /test/ttl changes the provider for everyone while it is in force.
test.describe.configure({ mode: "default" });

test.describe("device login through OpenID Connect", () => {
  test.use({ storageState: signedOut });
  test.beforeEach(async ({}, testInfo) => {
    test.skip(testInfo.project.name !== "desktop", "real nodes; the layout is not the point");
  });

  test("a machine without a key joins after its owner signs in at the provider", async ({ page, browser, adminState }, testInfo) => {
    test.setTimeout(300_000);
    const stamp = Date.now().toString(36);
    const host = `oidc-a-${stamp}`;
    const peerHost = `oidc-peer-${stamp}`;
    const peerUser = `oidc-peer-${stamp}`;

    // Every node may reach every node while this runs (other specs edit the policy).
    const before = JSON.parse(oxiscaleCli(["policy", "get", "-o", "json"])).policy as string | null;
    const policyFile = testInfo.outputPath("policy.hujson");
    writeFileSync(policyFile, allowAll);
    oxiscaleCli(["policy", "set", "--file", policyFile]);

    // A peer joined with a pre-auth key, to send the first packet to.
    const user: UserJson = JSON.parse(oxiscaleCli(["users", "create", peerUser, "-o", "json"]));
    const key = JSON.parse(oxiscaleCli(["preauthkeys", "create", "--user", String(user.id), "-o", "json"])).key as string;
    const peer = startNode(key, peerHost);
    let node: ReturnType<typeof startNode> | null = null;
    const admin = await browser.newContext({ storageState: adminState, baseURL: testInfo.project.use.baseURL });
    try {
      await expect.poll(() => nodeNamed(peerHost)?.online ?? false, { message: `peer online; node output:\n${peer.output()}`, timeout: 90_000 }).toBe(true);
      const peerIP = nodeNamed(peerHost)!.ip_addresses!.find((ip) => ip.includes("."))!;

      const started = Date.now();
      node = startNode(null, host, [peerIP]);
      const authURL = await node.authURL();
      const shownAfter = Date.now() - started; // tsnet logs the URL on a 5 s tick
      expect(authURL).toMatch(new RegExp(`^${serverURL.replace(/\./g, "\\.")}/register/\\S+$`));
      const proxy = await node.proxyURL(peerIP);

      // The AuthURL sends the browser to the provider with state, nonce and PKCE S256.
      const opened = Date.now();
      const authorize = page.waitForRequest((r) => r.url().startsWith(`${issuer}/auth?`));
      await page.goto(authURL);
      const params = new URL((await authorize).url()).searchParams;
      expect(params.get("client_id")).toBe("oxiscale");
      expect(params.get("redirect_uri")).toBe(callback);
      expect(params.get("code_challenge_method")).toBe("S256");
      for (const p of ["state", "nonce", "code_challenge"]) expect(params.get(p), p).toMatch(/^\S{16,}$/);

      const confirm = await landOn(page, () => signInAtProvider(page, "alice"), /^Connect this machine\?/);
      expect(confirm.status()).toBe(200);
      const confirmation = (await page.locator("body").innerText()).replace(/\s+/g, " ");
      expect(confirmation).toContain(host);
      expect(confirmation).toMatch(/linux/i);
      expect(confirmation).toMatch(/alice@example\.com|Alice Example/);
      await testInfo.attach("confirmation", { body: await page.screenshot({ fullPage: true }), contentType: "image/png" });
      expect(nodeNamed(host), "nothing registered before the click").toBeUndefined();

      await page.getByRole("button", { name: "Connect machine" }).click();
      await expect(page.getByRole("heading", { level: 1 })).toHaveText("Machine connected");
      const connected = Date.now();

      // Online (the server's view) and the first packet through the tailnet, timed from opening.
      let online = 0;
      const onlineWait = expect
        .poll(() => (nodeNamed(host)?.online ? (online ||= Date.now()) : 0), { message: "the node comes online", timeout: 90_000, intervals: [250] })
        .toBeGreaterThan(0);
      const reachWait = expect
        .poll(
          async () => {
            try {
              const res = await fetch(proxy, { signal: AbortSignal.timeout(4_000) });
              return res.status === 200 && (await res.text()).trim() === peerHost;
            } catch {
              return false;
            }
          },
          { message: `${host} reaches ${peerHost} through the tailnet; node output:\n${node.output()}`, timeout: 90_000, intervals: [250] },
        )
        .toBe(true);
      await Promise.all([onlineWait, reachWait]);
      const reached = Date.now();
      const timing =
        `AuthURL opened -> first packet through the tailnet ${reached - opened} ms ` +
        `(sign-in at the provider and confirmation, scripted: ${connected - opened} ms; then ` +
        `online ${online - connected} ms, first packet ${reached - connected} ms); ` +
        `node start -> AuthURL printed ${shownAfter} ms`;
      console.log(`oidc device login: ${timing}`);
      testInfo.annotations.push({ type: "timing", description: timing });

      // Owned by alice's user (named from her claims), on the console's machine list.
      const joined = nodeNamed(host)!;
      expect(joined.user?.name).toMatch(/^alice/);
      expect(joined.user?.email).toBe("alice@example.com");
      // The page named the node key: some 8+ hex characters of it.
      const keyHex = (joined.node_key ?? "").replace(/^nodekey:/, "");
      const shown = confirmation.match(/[0-9a-f]{8,}/gi) ?? [];
      expect(shown.some((h) => keyHex.includes(h.toLowerCase())), `the confirmation shows the node key (${keyHex}): ${confirmation}`).toBe(true);
      const machines = await admin.newPage();
      await machines.goto("/machines");
      const row = machines.locator(`tr[data-machine="${host}"]`);
      await expect(row).toContainText(joined.user!.name);
      await expect(row).toHaveAttribute("data-status", "online");
      await testInfo.attach("machines", { body: await machines.screenshot({ fullPage: true }), contentType: "image/png" });

      // Leave the tailnet empty for the other specs.
      for (const h of [host, peerHost]) oxiscaleCli(["nodes", "delete", "-i", String(nodeNamed(h)!.id)]);
    } finally {
      node?.stop();
      peer.stop();
      await admin.close();
      writeFileSync(policyFile, before ?? allowAll);
      oxiscaleCli(["policy", "set", "--file", policyFile]);
    }
  });

  // The server runs with allowed_domains [example.com] and requires verified email. The
  // claims are in end2end/oidc/accounts.json (username: preferred_username).
  for (const [login, email, username, reason] of [
    ["mallory", "mallory@evil.test", "mallory", /example\.com/],
    ["unverified", "carol@example.com", "carol", /verified/],
    ["noemail", "", "noemail", /example\.com/], // no email claim at all, as Authentik users may be
  ] as const) {
    test(`${login} is refused and nothing is registered`, async ({ page }) => {
      test.setTimeout(120_000);
      const host = `oidc-no-${login}-${Date.now().toString(36)}`;
      const node = startNode(null, host);
      try {
        await page.goto(await node.authURL());
        const response = await landOn(page, () => signInAtProvider(page, login), "Sign-in refused");
        await expectRefused(page, response, reason);
        expect(nodeNamed(host), "no machine").toBeUndefined();
        const made = listUsers().filter((u) => (email && u.email === email) || u.name.startsWith(username));
        expect(made, "no user").toEqual([]);
      } finally {
        node.stop();
      }
    });
  }

  test("a cancelled sign-in, a replayed callback, a forged state, another client's code, a spoiled ID token and a provider gone mid-login fail", async ({ page, context }, testInfo) => {
    test.setTimeout(180_000);
    const host = `oidc-bad-${Date.now().toString(36)}`;
    const node = startNode(null, host);
    try {
      const authURL = await node.authURL();

      // The person cancels at the provider: it answers error=access_denied.
      await page.goto(authURL);
      await expectFailed(page, await landOn(page, () => page.getByRole("link", { name: /Cancel/ }).click(), "Sign-in failed"));

      // The same callback twice: the first shows the confirmation, the second is refused even
      // with the cookies the first one came with (so the state itself is single-use, not only
      // the browser's copy of it).
      await page.goto(authURL);
      await signInAtProvider(page, "bob", false);
      const callbackURL = await consentHeld(page);
      const cookies = await context.cookies(callbackURL.href); // those the callback is sent with
      expect((await page.goto(callbackURL.href))?.status()).toBe(200);
      await expect(page.getByRole("heading", { level: 1 })).toHaveText(/^Connect this machine\?/);
      await context.addCookies(cookies);
      await expectFailed(page, await page.goto(callbackURL.href));

      // A real code with a state the server never issued. (bob's provider session and consent
      // stand, so the provider now answers at once.)
      const fresh = await callbackFrom(page, page.request.get(authURL, { maxRedirects: 0 }));
      fresh.searchParams.set("state", `forged-${Date.now()}`);
      await expectFailed(page, await page.goto(fresh.href));
      // A state the server did issue with a code the provider gave another client.
      const issued = await callbackFrom(page, page.request.get(authURL, { maxRedirects: 0 }));
      {
        const query = new URLSearchParams({
          client_id: "other-client",
          response_type: "code",
          scope: "openid email profile",
          redirect_uri: callback,
          state: "other",
          nonce: "other-nonce",
          code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", // RFC 7636's example
          code_challenge_method: "S256",
        });
        await page.goto(`${issuer}/auth?${query}`); // consent: other-client is new to bob
        const other = await consentHeld(page);
        issued.searchParams.set("code", other.searchParams.get("code")!);
      }
      await expectFailed(page, await page.goto(issued.href));

      // An ID token that expired ten minutes ago (re-signed by the provider with its own key).
      await providerHook("ttl", { seconds: -600 });
      try {
        await expectFailed(page, await landOn(page, () => page.goto(authURL), "Sign-in failed"));
      } finally {
        await providerHook("ttl", { seconds: null });
      }
      // An ID token for another sign-in (its nonce is not the one this one sent), then one
      // signed by a key the provider's JWKS does not list.
      for (const spoil of ["nonce", "foreign-key"]) {
        await providerHook("tamper", { id_token: spoil });
        try {
          await expectFailed(page, await landOn(page, () => page.goto(authURL), "Sign-in failed"));
        } finally {
          await providerHook("tamper", { id_token: null });
        }
      }
      // The provider goes away between the person's sign-in and the code exchange: a 502
      // that says so, and the machine can try again once it is back.
      await providerHook("down", { down: true });
      try {
        await expectFailed(page, await landOn(page, () => page.goto(authURL), "Sign-in failed"), 502);
        await expect(page.getByText(/identity provider/i).first()).toBeVisible();
      } finally {
        await providerHook("down", { down: false });
      }
      await testInfo.attach("sign-in failed", { body: await page.screenshot({ fullPage: true }), contentType: "image/png" });
      expect(nodeNamed(host), "nothing registered").toBeUndefined();
    } finally {
      node.stop();
    }
  });

  test("a person is the same user after the provider changes their email and groups", async ({ page, context }) => {
    test.setTimeout(180_000);
    const stamp = Date.now().toString(36);
    const login = `dora-${stamp}`;
    const claims = (email: string, groups: string[]) => ({
      email,
      email_verified: true,
      name: `Dora ${stamp}`,
      preferred_username: login,
      groups,
    });
    await providerHook(`accounts/${login}`, claims(`${login}@example.com`, ["engineering"]));
    const hosts = [`oidc-d1-${stamp}`, `oidc-d2-${stamp}`];
    const owners: (UserJson | null | undefined)[] = [];
    try {
      for (const [i, host] of hosts.entries()) {
        if (i === 1) {
          await providerHook(`accounts/${login}`, claims(`${login}.renamed@example.com`, ["sales"]));
          await context.clearCookies(); // sign in afresh at the provider
        }
        const node = startNode(null, host);
        try {
          await page.goto(await node.authURL());
          await landOn(page, () => signInAtProvider(page, login), /^Connect this machine\?/);
          await page.getByRole("button", { name: "Connect machine" }).click();
          await expect(page.getByRole("heading", { level: 1 })).toHaveText("Machine connected");
          await expect.poll(() => nodeNamed(host)?.user?.id, { message: `${host} registered` }).toBeDefined();
          owners.push(nodeNamed(host)!.user);
        } finally {
          node.stop();
        }
      }
      expect(owners[1]?.id, "keyed by (issuer, subject), not by email").toBe(owners[0]?.id);
      for (const host of hosts) oxiscaleCli(["nodes", "delete", "-i", String(nodeNamed(host)!.id)]);
    } finally {
      await providerHook(`accounts/${login}`, {}, "DELETE");
    }
  });
});
