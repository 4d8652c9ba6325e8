//! Keys: pre-auth keys (create for a user or with tags; the secret is shown once, with the
//! join command; expire) and API keys (create, shown once; expire). The server keeps only
//! hashes, so nothing listed here carries a secret.

use leptos::html::Code;
use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::get_console_config;
use crate::api::tailnet::{create_api_key, expire_api_key, expire_preauth_key, list_keys};
use crate::components::call::use_server_call;
use crate::components::copy_button::CopyButton;
use crate::components::notice::{ErrorNotice, Loading};
use crate::components::preauth_form::PreAuthKeyForm;
use crate::dto::tailnet::{ApiKeyRow, PreAuthKeyRow, short_time};

#[component]
pub fn KeysPage() -> impl IntoView {
    let changed = RwSignal::new(0_u64);
    let keys = Resource::new(move || changed.get(), |_| list_keys());
    let config = Resource::new(|| (), |_| get_console_config());
    // Fetched once: the form (and the secret it shows) must survive the list's refetches.
    let form_users = Resource::new(|| (), |_| list_keys());
    let refetch = Callback::new(move |()| changed.update(|c| *c += 1));

    // Erased types: the nested views are otherwise too deep for the compiler.
    let preauth = view! {
        <section aria-labelledby="preauth-heading" class="keys-section">
            <h2 id="preauth-heading">"Pre-auth keys"</h2>
            <p>"A pre-auth key lets a device join without signing in: as its user, or owned by its tags."</p>
            // The form is outside the list's Transition so a refetch keeps the shown secret.
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    let config = config.await.ok()?;
                    let users = form_users.await.ok()?.users;
                    Some(view! { <PreAuthKeyForm config users on_created=refetch /> })
                })}
            </Suspense>
            <Transition fallback=Loading>
                {move || Suspend::new(async move {
                    match keys.await {
                        Ok(o) => {
                            let (usable, spent): (Vec<_>, Vec<_>) = o.preauth.into_iter().partition(|k| k.usable());
                            view! {
                                <h3>"Usable"</h3>
                                <PreAuthTable keys=usable on_changed=refetch empty="No usable pre-auth keys." />
                                <h3>"Used or expired"</h3>
                                <PreAuthTable keys=spent on_changed=refetch empty="None." />
                            }
                            .into_any()
                        }
                        Err(e) => view! { <ErrorNotice message=e.to_string() /> }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
    .into_any();
    let api = view! {
        <section aria-labelledby="api-heading" class="keys-section">
            <h2 id="api-heading">"API keys"</h2>
            <p>"API keys authenticate the REST API and remote CLI (" <code>"Authorization: Bearer …"</code> ")."</p>
            <CreateApiKey on_created=refetch />
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    keys.await.ok().map(|o| view! { <ApiTable keys=o.api on_changed=refetch /> })
                })}
            </Transition>
        </section>
    }
    .into_any();
    view! {
        <Title text="Keys" />
        <h1>"Keys"</h1>
        {preauth}
        {api}
    }
}

#[component]
fn PreAuthTable(
    keys: Vec<PreAuthKeyRow>,
    on_changed: Callback<()>,
    empty: &'static str,
) -> impl IntoView {
    if keys.is_empty() {
        return view! { <p class="muted">{empty}</p> }.into_any();
    }
    let rows = keys
        .into_iter()
        .map(|k| {
            let owner = if k.tags.is_empty() { k.user.clone().unwrap_or_default() } else { k.tags.join(", ") };
            let mut kind = Vec::new();
            if k.reusable { kind.push("reusable"); }
            if k.ephemeral { kind.push("ephemeral"); }
            if k.used { kind.push("used"); }
            if k.expired { kind.push("expired"); }
            let expires = short_time(&k.expiration);
            let can_expire = !k.expired;
            let id = k.id;
            let label = format!("Expire key {}", k.masked);
            view! {
                <tr data-key=k.masked.clone()>
                    <td data-label="Key"><code>{k.masked.clone()}</code></td>
                    <td data-label="For">{owner}</td>
                    <td data-label="Kind">{kind.join(", ")}</td>
                    <td data-label="Expires">{expires}</td>
                    <td data-label="Created">{short_time(&k.created)}</td>
                    <td>{can_expire.then(|| view! { <ExpireButton label=label.clone() on_changed run=move || Box::pin(async move { expire_preauth_key(id).await }) /> })}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <div class="table-wrap">
            <table class="keys responsive">
                <thead><tr>
                    <th scope="col">"Key"</th><th scope="col">"For"</th><th scope="col">"Kind"</th>
                    <th scope="col">"Expires"</th><th scope="col">"Created"</th>
                    <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                </tr></thead>
                <tbody>{rows}</tbody>
            </table>
        </div>
    }
    .into_any()
}

type ExpireCall =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), crate::dto::ConsoleError>>>>;

#[component]
fn ExpireButton(
    label: String,
    on_changed: Callback<()>,
    run: impl Fn() -> ExpireCall + 'static,
) -> impl IntoView {
    let call = use_server_call();
    let click = move |_| call.run(run(), move |()| on_changed.run(()));
    view! {
        <button type="button" class="button button--secondary" aria-label=label disabled=move || call.disabled() on:click=click>
            "Expire"
        </button>
        {move || call.error.get().map(|message| view! { <ErrorNotice message /> })}
    }
}

#[component]
fn ApiTable(keys: Vec<ApiKeyRow>, on_changed: Callback<()>) -> impl IntoView {
    if keys.is_empty() {
        return view! { <p class="muted">"No API keys."</p> }.into_any();
    }
    let rows = keys
        .into_iter()
        .map(|k| {
            let id = k.id;
            let label = format!("Expire API key {}", k.prefix);
            let state = if k.expired { "expired" } else { "active" };
            view! {
                <tr data-api-key=k.prefix.clone()>
                    <td data-label="Prefix"><code>{k.prefix.clone()}</code></td>
                    <td data-label="State">{state}</td>
                    <td data-label="Expires">{short_time(&k.expiration)}</td>
                    <td data-label="Last used">{k.last_seen.as_deref().map(short_time).unwrap_or_else(|| "never".into())}</td>
                    <td>{(!k.expired).then(|| view! { <ExpireButton label=label.clone() on_changed run=move || Box::pin(async move { expire_api_key(id).await }) /> })}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <div class="table-wrap">
            <table class="keys responsive">
                <thead><tr>
                    <th scope="col">"Prefix"</th><th scope="col">"State"</th><th scope="col">"Expires"</th>
                    <th scope="col">"Last used"</th><th scope="col"><span class="visually-hidden">"Actions"</span></th>
                </tr></thead>
                <tbody>{rows}</tbody>
            </table>
        </div>
    }
    .into_any()
}

#[component]
fn CreateApiKey(on_created: Callback<()>) -> impl IntoView {
    let call = use_server_call();
    let expiration = RwSignal::new("90d".to_owned());
    let created = RwSignal::new(None::<String>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        call.run(create_api_key(expiration.get_untracked()), move |s| {
            created.set(Some(s.secret));
            on_created.run(());
        });
    };
    view! {
        <form class="key-form" on:submit=submit aria-label="Create an API key">
            <label>"Expires in"
                <input type="text" name="api_expiration" autocomplete="off" prop:value=move || expiration.get() on:input=move |ev| expiration.set(event_target_value(&ev)) />
            </label>
            <button type="submit" class="button" disabled=move || call.disabled()>"Create API key"</button>
            {move || call.error.get().map(|message| view! { <ErrorNotice message /> })}
        </form>
        {move || created.get().map(|secret| {
            let target = NodeRef::<Code>::new();
            view! {
                <section class="secret" aria-labelledby="new-api-key-heading">
                    <h3 id="new-api-key-heading">"New API key"</h3>
                    <p>"Copy it now: it is shown only once and cannot be retrieved later."</p>
                    <div class="command">
                        <pre class="command__text"><code id="new-api-key" node_ref=target>{secret.clone()}</code></pre>
                        <CopyButton text=secret target what="API key" />
                    </div>
                </section>
            }
        })}
    }
}
