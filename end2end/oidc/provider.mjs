#!/usr/bin/env node
// A real OpenID provider for oxiscale's device-login browser tests: panva's oidc-provider
// (OpenID-certified), run as its own process so the server talks to it exactly as it would to
// Authentik or Keycloak: discovery, authorization endpoint with PKCE S256, token endpoint with
// client authentication, JWKS, userinfo. Ours are only the accounts, a check of the login form
// and the /test/ hooks below (one of which can make ID tokens come out already expired).
//
//   node end2end/oidc/provider.mjs          (npm ci in end2end/oidc first)
//
// Environment:
//   OIDC_PORT            port on 127.0.0.1 (default 18490); the issuer is http://127.0.0.1:PORT
//   OIDC_CLIENT_SECRET   secret of client `oxiscale` (default oxiscale-e2e-secret)
//   OIDC_REDIRECT_URIS   comma-separated redirect URIs of both clients
//                        (default http://127.0.0.1:18480/oidc/callback)
//   OIDC_ACCOUNTS        accounts file (default accounts.json beside this script)
//
// Clients: `oxiscale` (the server under test) and `other-client` (secret `other-secret`), so a
// test can hold a code issued to someone else. Both are confidential, code flow only, and
// registered for client_secret_basic; oidc-provider takes client_secret_post from them too.
// PKCE (S256, the only method offered) is required of every authorization request.
//
// People: accounts.json maps a login to { password, claims }. The login form (oidc-provider's
// devInteractions, fields "login" and "password", then a consent page with "Continue") accepts
// only a known login with its password; anything else gets a 401 page at the provider and the
// relying party hears nothing (as with a typo at a real IdP). "[ Cancel ]" on those pages
// sends error=access_denied back to the relying party. The account id (and `sub`) is
// claims.sub, not the login, as at real providers.
//
// Claims by scope: openid → sub; email → email, email_verified; profile → name,
// preferred_username, picture AND groups; groups → groups. groups rides with profile as
// Authentik does, so the server sees them whether or not it asks for the `groups` scope.
// ID tokens carry the granted claims themselves (conformIdTokenClaims: false), as Authentik,
// Keycloak and Google do, not only userinfo.
//
// Test hooks, outside the OIDC paths, answered only to loopback peers (the listener is on
// 127.0.0.1 anyway):
//   POST   /test/accounts/<login>  body: JSON claims. Replaces that person's claims (creates
//                                  the login if new). sub and password stay as they were; a new
//                                  login gets sub e2e-sub-<login>, password <login>-password.
//   GET    /test/accounts/<login>  the claims in force
//   DELETE /test/accounts/<login>  forget the login
//   POST   /test/ttl               body {"seconds": N}: ID tokens issued from now on live N
//                                  seconds. oidc-provider only allows N > 0, so for N <= 0 the
//                                  token endpoint's ID token is re-signed (same key) with
//                                  exp = now + N and iat = exp - 3600: a normal token that
//                                  expired -N seconds ago. {"seconds": null} restores 3600.
//   POST   /test/tamper            body {"id_token": "nonce" | "foreign-key" | null}: ID tokens
//                                  from the token endpoint come with a nonce the server never
//                                  sent, or re-signed by a key the JWKS does not list (same
//                                  kid); null stops it.
//   POST   /test/down              body {"down": true|false}: the token endpoint drops every
//                                  connection, as a provider that went away during a login.
//   POST   /test/reset             accounts from the file again, default ID-token lifetime,
//                                  no tampering, up
//
// Prints `oidc-provider: listening on <issuer>` when ready; SIGTERM/SIGINT end it. Protocol
// errors (a refused code, a wrong verifier) are logged to stderr, one line each, so a failing
// test's output says what the provider refused. oidc-provider 9 wants Node 22 and warns
// "Unsupported runtime" on Node 20; it works there.

import { generateKeyPairSync, randomBytes, sign } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import Provider from "oidc-provider";

const here = path.dirname(fileURLToPath(import.meta.url));
const port = Number(process.env.OIDC_PORT ?? 18490);
const issuer = `http://127.0.0.1:${port}`;
const clientSecret = process.env.OIDC_CLIENT_SECRET ?? "oxiscale-e2e-secret";
const redirectUris = (process.env.OIDC_REDIRECT_URIS ?? "http://127.0.0.1:18480/oidc/callback")
  .split(",")
  .map((uri) => uri.trim())
  .filter(Boolean);
const accountsFile = process.env.OIDC_ACCOUNTS ?? path.join(here, "accounts.json");
const DEFAULT_ID_TOKEN_TTL = 3600;

// Mutable by the test hooks; tests run one at a time (workers=1), so no locking.
let accounts; // Map login -> { password, claims }
let idTokenTtl; // seconds; <= 0 means "issue already expired" (see /test/ttl)
let tamper; // null, or how the next ID tokens are spoiled (see /test/tamper)
let down; // the token endpoint drops every connection (see /test/down)

function loadAccounts() {
  const parsed = JSON.parse(readFileSync(accountsFile, "utf8"));
  for (const [login, entry] of Object.entries(parsed)) {
    if (typeof entry?.password !== "string" || typeof entry?.claims?.sub !== "string") {
      throw new Error(`${accountsFile}: account ${login} needs a password and claims.sub`);
    }
  }
  return new Map(Object.entries(parsed));
}

function reset() {
  accounts = loadAccounts();
  idTokenTtl = DEFAULT_ID_TOKEN_TTL;
  tamper = null;
  down = false;
}
reset();

// A fresh RS256 key per run: the server must fetch the JWKS, never cache a key across runs.
const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: "jwk" }), kid: `e2e-${Date.now().toString(36)}`, use: "sig", alg: "RS256" };
// A key the JWKS never lists, for ID tokens "signed by another key" (same kid, as a forger would).
const { privateKey: foreignKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });

const client = (client_id, client_secret) => ({
  client_id,
  client_secret,
  redirect_uris: redirectUris,
  grant_types: ["authorization_code"],
  response_types: ["code"],
  token_endpoint_auth_method: "client_secret_basic",
});

const provider = new Provider(issuer, {
  clients: [client("oxiscale", clientSecret), client("other-client", "other-secret")],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString("hex")] },
  responseTypes: ["code"],
  pkce: { required: () => true },
  scopes: ["openid", "profile", "email", "groups"],
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: ["name", "preferred_username", "picture", "groups"],
    groups: ["groups"],
  },
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true } },
  async findAccount(_ctx, sub) {
    const entry = [...accounts.values()].find((a) => a.claims.sub === sub);
    // undefined = no such person: oidc-provider then asks for a login again.
    if (!entry) return undefined;
    return { accountId: sub, claims: async () => structuredClone(entry.claims) };
  },
  ttl: {
    IdToken: () => (idTokenTtl > 0 ? idTokenTtl : DEFAULT_ID_TOKEN_TTL),
    AccessToken: 600,
    AuthorizationCode: 60,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
});

for (const event of ["authorization.error", "grant.error", "userinfo.error", "server_error"]) {
  provider.on(event, (_ctx, err) => {
    const detail = err.error_detail ?? err.cause?.message ?? "";
    console.error(`oidc-provider: ${event}: ${err.error ?? err.name}: ${err.error_description ?? err.message}${detail ? ` (${detail})` : ""}`);
  });
}

// The login step: devInteractions would log in ANY name (and ignore the password), so its
// form's submission is checked here first. Consent and everything else pass through.
provider.use(async (ctx, next) => {
  if (ctx.method !== "POST" || !/^\/interaction\/[^/]+$/.test(ctx.path)) return next();
  let details;
  try {
    details = await provider.interactionDetails(ctx.req, ctx.res);
  } catch {
    return next(); // expired or unknown interaction: devInteractions reports it
  }
  if (details.prompt.name !== "login") return next();
  const form = new URLSearchParams((await readBody(ctx.req)).toString("utf8"));
  const login = form.get("login") ?? "";
  const entry = accounts.get(login);
  if (!entry || entry.password !== form.get("password")) {
    ctx.status = 401;
    ctx.type = "html";
    ctx.body =
      // Not "Sign-in refused": that heading is the oxiscale server's own refusal page.
      `<!doctype html><title>Test provider</title><h1>Unknown login or wrong password</h1>` +
      `<p>The test provider knows only the logins in its accounts file.</p><p><a href="${ctx.path}">Try again</a></p>`;
    return;
  }
  ctx.respond = false; // interactionFinished writes the 303 itself
  await provider.interactionFinished(ctx.req, ctx.res, { login: { accountId: entry.claims.sub } }, { mergeWithLastSubmission: false });
});

// Spoiled ID tokens, re-signed after the fact: already expired (/test/ttl with seconds <= 0),
// or as /test/tamper says (a nonce the server never sent; a key the JWKS does not list).
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path !== "/token" || ctx.status !== 200 || !ctx.body?.id_token) return;
  if (idTokenTtl <= 0) {
    ctx.body = { ...ctx.body, id_token: resign(ctx.body.id_token, (c) => backdate(c, idTokenTtl), privateKey) };
  } else if (tamper === "nonce") {
    ctx.body = { ...ctx.body, id_token: resign(ctx.body.id_token, (c) => (c.nonce = `not-${c.nonce}`), privateKey) };
  } else if (tamper === "foreign-key") {
    ctx.body = { ...ctx.body, id_token: resign(ctx.body.id_token, () => {}, foreignKey) };
  }
});

/** Sets exp = now + offset (offset <= 0) with a one-hour life before it. */
function backdate(claims, offset) {
  claims.exp = Math.floor(Date.now() / 1000) + offset;
  claims.iat = claims.exp - DEFAULT_ID_TOKEN_TTL;
}

/** Re-signs an RS256 JWT with `key` after `change` edited its claims in place. */
function resign(jwt, change, key) {
  const [header, payload] = jwt.split(".");
  const claims = JSON.parse(Buffer.from(payload, "base64url"));
  change(claims);
  const body = `${header}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}`;
  return `${body}.${sign("sha256", Buffer.from(body), key).toString("base64url")}`;
}

async function readBody(req, limit = 64 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Error("request body too large");
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function reply(res, status, body) {
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
  res.end(JSON.stringify(body));
}

const LOOPBACK = new Set(["127.0.0.1", "::1", "::ffff:127.0.0.1"]);

async function testHook(req, res) {
  if (!LOOPBACK.has(req.socket.remoteAddress)) return reply(res, 403, { error: "loopback only" });
  const url = new URL(req.url, issuer);
  const json = async () => {
    const text = (await readBody(req)).toString("utf8");
    return text ? JSON.parse(text) : {};
  };
  const account = url.pathname.match(/^\/test\/accounts\/([^/]+)$/);
  if (account) {
    const login = decodeURIComponent(account[1]);
    const existing = accounts.get(login);
    if (req.method === "GET") return existing ? reply(res, 200, existing.claims) : reply(res, 404, { error: "no such login" });
    if (req.method === "DELETE") return reply(res, accounts.delete(login) ? 200 : 404, {});
    if (req.method === "POST") {
      const claims = await json();
      if (typeof claims !== "object" || claims === null || Array.isArray(claims)) return reply(res, 400, { error: "body must be a JSON object of claims" });
      claims.sub = existing?.claims.sub ?? claims.sub ?? `e2e-sub-${login}`;
      accounts.set(login, { password: existing?.password ?? `${login}-password`, claims });
      return reply(res, 200, claims);
    }
  } else if (url.pathname === "/test/ttl" && req.method === "POST") {
    const { seconds } = await json();
    if (seconds !== null && !Number.isInteger(seconds)) return reply(res, 400, { error: "seconds must be an integer or null" });
    idTokenTtl = seconds ?? DEFAULT_ID_TOKEN_TTL;
    return reply(res, 200, { seconds: idTokenTtl });
  } else if (url.pathname === "/test/tamper" && req.method === "POST") {
    const { id_token } = await json();
    if (![null, "nonce", "foreign-key"].includes(id_token ?? null)) return reply(res, 400, { error: 'id_token must be "nonce", "foreign-key" or null' });
    tamper = id_token ?? null;
    return reply(res, 200, { id_token: tamper });
  } else if (url.pathname === "/test/down" && req.method === "POST") {
    const body = await json();
    if (typeof body.down !== "boolean") return reply(res, 400, { error: "down must be a boolean" });
    down = body.down;
    return reply(res, 200, { down });
  } else if (url.pathname === "/test/reset" && req.method === "POST") {
    reset();
    return reply(res, 200, { accounts: [...accounts.keys()], seconds: idTokenTtl });
  }
  return reply(res, 404, { error: "unknown test hook" });
}

// The provider's Koa app serves everything except /test/, which never reaches it.
const handleOidc = provider.callback();
const server = http.createServer((req, res) => {
  if (req.url.startsWith("/test/")) {
    testHook(req, res).catch((err) => reply(res, 400, { error: String(err.message ?? err) }));
  } else if (down && req.url.startsWith("/token")) {
    req.socket.destroy(); // as a provider that went away mid-login looks to the server
  } else {
    handleOidc(req, res);
  }
});
server.listen(port, "127.0.0.1", () => console.log(`oidc-provider: listening on ${issuer}`));

for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
