#!/usr/bin/env node
// Self-check of provider.mjs, without oxiscale: starts the provider on a spare port, plays a
// relying party by hand (authorization code + PKCE S256, as the server will) and asserts what
// the browser tests rely on. Run it after changing provider.mjs or upgrading oidc-provider:
//
//   (cd end2end/oidc && npm ci && node check.mjs)
//
// Prints one line per check; exits non-zero at the first failure.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, createPublicKey, randomBytes, verify } from "node:crypto";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const port = 18000 + Math.floor(Math.random() * 400);
const issuer = `http://127.0.0.1:${port}`;
const redirectUri = "http://127.0.0.1:18480/oidc/callback";
const basic = (id, secret) => `Basic ${Buffer.from(`${id}:${secret}`).toString("base64")}`;
const ours = basic("oxiscale", "oxiscale-e2e-secret");

const provider = spawn(process.execPath, [path.join(here, "provider.mjs")], {
  env: { ...process.env, OIDC_PORT: String(port), OIDC_REDIRECT_URIS: redirectUri },
  stdio: ["ignore", "pipe", "inherit"],
});
await new Promise((resolve, reject) => {
  provider.stdout.on("data", (d) => String(d).includes("listening on") && resolve());
  provider.on("exit", (code) => reject(new Error(`provider exited with ${code}`)));
});

const ok = (what) => console.log(`ok: ${what}`);

/** One browser: a cookie jar and manual redirects, so every hop can be inspected. */
function browser() {
  const jar = new Map();
  return async function request(url, init = {}) {
    const cookie = [...jar].map(([k, v]) => `${k}=${v}`).join("; ");
    const res = await fetch(url, { ...init, redirect: "manual", headers: { ...init.headers, cookie } });
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(";");
      const i = pair.indexOf("=");
      jar.set(pair.slice(0, i), pair.slice(i + 1));
    }
    return res;
  };
}

// Locations may be relative (devInteractions sends /interaction/<uid>).
const next = (res) => new URL(res.headers.get("location"), issuer).href;
const form = (fields) => ({ method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: new URLSearchParams(fields) });

/** Logs `login` in through the login and consent pages; returns the callback URL's parameters. */
async function authorize(login, password, { clientId = "oxiscale", challenge, nonce = "n-" + randomBytes(4).toString("hex") } = {}) {
  const go = browser();
  const params = { client_id: clientId, response_type: "code", scope: "openid profile email groups", redirect_uri: redirectUri, state: "s-1", nonce };
  if (challenge) Object.assign(params, { code_challenge: challenge, code_challenge_method: "S256" });
  let res = await go(`${issuer}/auth?${new URLSearchParams(params)}`);
  let location = next(res);
  if (location.startsWith(redirectUri)) return new URL(location).searchParams; // refused at once
  assert.match(await (await go(location)).text(), /name="login"[\s\S]*name="password"/);
  res = await go(location, form({ prompt: "login", login, password }));
  if (res.status !== 303) return res;
  res = await go(next(res)); // back through /auth: now consent
  const consent = next(res);
  assert.match(await (await go(consent)).text(), />Continue</);
  res = await go(consent, form({ prompt: "consent" }));
  res = await go(next(res));
  location = next(res);
  assert.ok(location.startsWith(redirectUri), `redirected to the client, got ${location}`);
  return new URL(location).searchParams;
}

const token = (code, verifier, auth = ours, extra = {}) =>
  fetch(`${issuer}/token`, {
    ...form({ grant_type: "authorization_code", code, redirect_uri: redirectUri, code_verifier: verifier, ...extra }),
    headers: { "content-type": "application/x-www-form-urlencoded", ...(auth ? { authorization: auth } : {}) },
  });

function pkce() {
  const verifier = randomBytes(32).toString("base64url");
  return { verifier, challenge: createHash("sha256").update(verifier).digest("base64url") };
}

/** Verifies an ID token's RS256 signature against the provider's JWKS; returns its claims. */
async function idClaims(jwt) {
  const { keys } = await (await fetch(`${issuer}/jwks`)).json();
  const [h, p, s] = jwt.split(".");
  const header = JSON.parse(Buffer.from(h, "base64url"));
  const key = createPublicKey({ key: keys.find((k) => k.kid === header.kid), format: "jwk" });
  assert.ok(verify("sha256", Buffer.from(`${h}.${p}`), key, Buffer.from(s, "base64url")), "ID token signature");
  return JSON.parse(Buffer.from(p, "base64url"));
}

try {
  const discovery = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
  assert.equal(discovery.issuer, issuer);
  assert.deepEqual(discovery.code_challenge_methods_supported, ["S256"]);
  ok(`discovery: issuer ${discovery.issuer}, PKCE ${discovery.code_challenge_methods_supported}`);

  const noPkce = await authorize("alice", "alice-password");
  assert.equal(noPkce.get("error"), "invalid_request");
  ok(`no code_challenge: ${noPkce.get("error")} (${noPkce.get("error_description")})`);

  let { verifier, challenge } = pkce();
  assert.equal((await authorize("nobody", "x", { challenge })).status, 401);
  assert.equal((await authorize("alice", "wrong", { challenge })).status, 401);
  ok("unknown login and wrong password: 401 at the provider");

  const cb = await authorize("alice", "alice-password", { challenge, nonce: "n-alice" });
  assert.equal(cb.get("state"), "s-1");
  assert.equal(cb.get("iss"), issuer);
  const code = cb.get("code");
  let res = await token(code, verifier + "x");
  assert.equal(res.status, 400);
  assert.equal((await res.json()).error, "invalid_grant");
  ok("wrong code_verifier: 400 invalid_grant");
  res = await token(code, verifier);
  assert.equal(res.status, 200);
  const tokens = await res.json();
  const claims = await idClaims(tokens.id_token);
  assert.equal(claims.nonce, "n-alice");
  assert.equal(claims.aud, "oxiscale");
  assert.equal(claims.email, "alice@example.com");
  assert.equal(claims.email_verified, true);
  assert.deepEqual(claims.groups, ["engineering"]);
  ok(`ID token: sub ${claims.sub}, nonce ${claims.nonce}, email ${claims.email}, groups ${claims.groups}`);
  const me = await (await fetch(`${issuer}/me`, { headers: { authorization: `Bearer ${tokens.access_token}` } })).json();
  assert.equal(me.preferred_username, "alice");
  ok(`userinfo: ${JSON.stringify(me)}`);
  assert.equal((await token(code, verifier)).status, 400);
  ok("the same code again: 400");

  ({ verifier, challenge } = pkce());
  const other = await authorize("bob", "bob-password", { clientId: "other-client", challenge });
  assert.equal((await token(other.get("code"), verifier)).status, 400);
  ok("a code issued to other-client: 400 for oxiscale");

  ({ verifier, challenge } = pkce());
  const post = await authorize("noemail", "noemail-password", { challenge });
  res = await token(post.get("code"), verifier, null, { client_id: "oxiscale", client_secret: "oxiscale-e2e-secret" });
  assert.equal(res.status, 200);
  const noemail = await idClaims((await res.json()).id_token);
  assert.equal(noemail.email, undefined);
  ok(`client_secret_post accepted; noemail has no email claim (${JSON.stringify(noemail)})`);

  const hook = (p, body) => fetch(`${issuer}/test/${p}`, { method: "POST", body: JSON.stringify(body) });
  assert.equal((await hook("accounts/alice", { email: "alice@example.com", email_verified: true, groups: ["sales"] })).status, 200);
  assert.equal((await hook("ttl", { seconds: -600 })).status, 200);
  ({ verifier, challenge } = pkce());
  const changed = await idClaims((await (await token((await authorize("alice", "alice-password", { challenge })).get("code"), verifier)).json()).id_token);
  assert.deepEqual(changed.groups, ["sales"]);
  assert.equal(changed.sub, claims.sub, "sub survives a claims change");
  const now = Math.floor(Date.now() / 1000);
  assert.ok(changed.exp <= now - 590 && changed.iat === changed.exp - 3600, `expired: exp ${changed.exp}, now ${now}`);
  ok(`hooks: groups now ${changed.groups}; ID token expired ${now - changed.exp} s ago`);
  await hook("reset", {});
} finally {
  provider.kill("SIGTERM");
}
