//! Identity: the OpenID Connect provider people and machines sign in with. One form, saved
//! at once; the server discovers the provider before it stores anything, and the next
//! sign-in uses the new settings. The client secret is write-only: the page only learns
//! whether one is set.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::identity::{get_identity, reset_identity, set_identity};
use crate::components::live::use_hydrated;
use crate::components::notice::{ErrorNotice, Loading};
use crate::dto::identity::{IdentitySettings, IdentitySource, IdentityUpdate, ProviderStatus};
use crate::dto::split_list;

#[component]
pub fn IdentityPage() -> impl IntoView {
    let settings = Resource::new(|| (), |_| get_identity());

    view! {
        <Title text="Identity" />
        <h1>"Identity"</h1>
        <Suspense fallback=Loading>
            {move || Suspend::new(async move {
                match settings.await {
                    Ok(initial) => view! { <IdentityForm initial /> }.into_any(),
                    Err(error) => view! { <ErrorNotice message=error.to_string() /> }.into_any(),
                }
            })}
        </Suspense>
    }
}

/// Everything the form edits, as signals.
#[derive(Clone, Copy)]
struct Fields {
    issuer: RwSignal<String>,
    client_id: RwSignal<String>,
    client_secret: RwSignal<String>,
    scopes: RwSignal<String>,
    allowed_domains: RwSignal<String>,
    allowed_users: RwSignal<String>,
    allowed_groups: RwSignal<String>,
    email_verified_required: RwSignal<bool>,
    use_expiry_from_token: RwSignal<bool>,
    expiry: RwSignal<String>,
}

impl Fields {
    fn new(s: &IdentitySettings) -> Fields {
        Fields {
            issuer: RwSignal::new(s.issuer.clone()),
            client_id: RwSignal::new(s.client_id.clone()),
            client_secret: RwSignal::new(String::new()),
            scopes: RwSignal::new(s.scopes.join(" ")),
            allowed_domains: RwSignal::new(s.allowed_domains.join("\n")),
            allowed_users: RwSignal::new(s.allowed_users.join("\n")),
            allowed_groups: RwSignal::new(s.allowed_groups.join("\n")),
            email_verified_required: RwSignal::new(s.email_verified_required),
            use_expiry_from_token: RwSignal::new(s.use_expiry_from_token),
            expiry: RwSignal::new(s.expiry.clone()),
        }
    }

    /// Shows what the server put in force (its canonical form); the secret field empties.
    fn load(&self, s: &IdentitySettings) {
        self.issuer.set(s.issuer.clone());
        self.client_id.set(s.client_id.clone());
        self.client_secret.set(String::new());
        self.scopes.set(s.scopes.join(" "));
        self.allowed_domains.set(s.allowed_domains.join("\n"));
        self.allowed_users.set(s.allowed_users.join("\n"));
        self.allowed_groups.set(s.allowed_groups.join("\n"));
        self.email_verified_required.set(s.email_verified_required);
        self.use_expiry_from_token.set(s.use_expiry_from_token);
        self.expiry.set(s.expiry.clone());
    }

    fn collect(&self) -> IdentityUpdate {
        IdentityUpdate {
            issuer: self.issuer.get_untracked().trim().to_owned(),
            client_id: self.client_id.get_untracked().trim().to_owned(),
            client_secret: self.client_secret.get_untracked(),
            scopes: split_list(&self.scopes.get_untracked()),
            allowed_domains: split_list(&self.allowed_domains.get_untracked()),
            allowed_users: split_list(&self.allowed_users.get_untracked()),
            // Group names may hold spaces: one per line (or comma-separated).
            allowed_groups: self
                .allowed_groups
                .get_untracked()
                .split(['\n', ','])
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect(),
            email_verified_required: self.email_verified_required.get_untracked(),
            use_expiry_from_token: self.use_expiry_from_token.get_untracked(),
            expiry: self.expiry.get_untracked().trim().to_owned(),
        }
    }
}

/// What the form asks of the server.
#[derive(Clone)]
enum Op {
    Save(IdentityUpdate),
    /// Back to the config file's settings.
    Reset,
}

fn status_text(s: &IdentitySettings) -> String {
    match s.status {
        ProviderStatus::Ready => format!(
            "On: people and machines sign in through {}.",
            s.issuer
        ),
        ProviderStatus::Waiting => format!(
            "Waiting: {} could not be reached yet; the server keeps trying, and sign-in through it starts working when it answers.",
            s.issuer
        ),
        ProviderStatus::Off => "Off: only local accounts sign in to the console, and machines without a key wait for an administrator.".into(),
    }
}

fn source_text(s: &IdentitySettings) -> &'static str {
    match s.source {
        IdentitySource::Saved => {
            "These settings were saved here; they win over the config file's oidc settings."
        }
        IdentitySource::ConfigFile => {
            "These settings come from the config file (oidc.*). Saving here overrides them."
        }
    }
}

#[component]
fn IdentityForm(initial: IdentitySettings) -> impl IntoView {
    let fields = Fields::new(&initial);
    let current = RwSignal::new(initial.clone());
    // Which operation the status line reports on.
    let last = RwSignal::new(None::<Op>);
    let act = Action::new(move |op: &Op| {
        let op = op.clone();
        async move {
            match op {
                Op::Save(update) => set_identity(update).await,
                Op::Reset => reset_identity().await,
            }
        }
    });
    Effect::new(move |_| {
        if let Some(Ok(saved)) = act.value().get() {
            fields.load(&saved);
            current.set(saved);
        }
    });
    // False until hydrated: marks the form as live (tests wait for it).
    let ready = use_hydrated();
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let op = Op::Save(fields.collect());
        last.set(Some(op.clone()));
        act.dispatch(op);
    };
    let on_reset = move |_| {
        last.set(Some(Op::Reset));
        act.dispatch(Op::Reset);
    };
    let secret_placeholder = move || {
        if current.get().client_secret_set {
            "A secret is set; leave empty to keep it"
        } else {
            "No secret set"
        }
    };

    view! {
        <form class="identity-form" data-ready=move || ready.get().to_string() on:submit=on_submit>
            <section class="card identity-section" aria-labelledby="identity-state-heading">
                <h2 id="identity-state-heading">"OpenID Connect"</h2>
                <p id="identity-status">{move || status_text(&current.get())}</p>
                <p class="hint" id="identity-source">{move || source_text(&current.get())}</p>
                <p class="hint">
                    "Register this redirect URI at the provider: "
                    <code id="identity-redirect-uri">{initial.redirect_uri.clone()}</code>
                </p>
            </section>

            <section class="card identity-section" aria-labelledby="identity-provider-heading">
                <h2 id="identity-provider-heading">"Provider"</h2>
                <div class="field">
                    <label for="identity-issuer">"Issuer URL"</label>
                    <p class="hint" id="identity-issuer-hint">
                        "https://…, as the provider names itself (plain http only on this machine). Empty turns sign-in through a provider off."
                    </p>
                    <input
                        id="identity-issuer"
                        type="text"
                        inputmode="url"
                        autocomplete="off"
                        spellcheck="false"
                        aria-describedby="identity-issuer-hint"
                        bind:value=fields.issuer
                    />
                </div>
                <div class="field">
                    <label for="identity-client-id">"Client ID"</label>
                    <input
                        id="identity-client-id"
                        type="text"
                        autocomplete="off"
                        spellcheck="false"
                        bind:value=fields.client_id
                    />
                </div>
                <div class="field">
                    <label for="identity-client-secret">"Client secret"</label>
                    <p class="hint" id="identity-secret-hint">
                        "Write-only: it is stored on the server and never shown again."
                    </p>
                    <input
                        id="identity-client-secret"
                        type="password"
                        autocomplete="new-password"
                        spellcheck="false"
                        aria-describedby="identity-secret-hint"
                        placeholder=secret_placeholder
                        bind:value=fields.client_secret
                    />
                </div>
                <div class="field">
                    <label for="identity-scopes">"Scopes"</label>
                    <p class="hint" id="identity-scopes-hint">
                        "Separated by spaces; must include openid. Add groups where the provider needs it."
                    </p>
                    <input
                        id="identity-scopes"
                        type="text"
                        autocomplete="off"
                        spellcheck="false"
                        aria-describedby="identity-scopes-hint"
                        bind:value=fields.scopes
                    />
                </div>
            </section>

            <section class="card identity-section" aria-labelledby="identity-who-heading">
                <h2 id="identity-who-heading">"Who may sign in"</h2>
                <p class="hint">"Empty lists restrict nothing; every list that is filled in must pass."</p>
                <ListField
                    id="identity-allowed-domains"
                    label="Allowed email domains"
                    hint="One per line, e.g. example.com."
                    value=fields.allowed_domains
                />
                <ListField
                    id="identity-allowed-users"
                    label="Allowed users"
                    hint="Email addresses, one per line."
                    value=fields.allowed_users
                />
                <ListField
                    id="identity-allowed-groups"
                    label="Allowed groups"
                    hint="Provider groups (the groups claim), one per line."
                    value=fields.allowed_groups
                />
                <div class="field field--check">
                    <input
                        id="identity-email-verified"
                        type="checkbox"
                        bind:checked=fields.email_verified_required
                    />
                    <label for="identity-email-verified">
                        "Require an email address the provider has verified"
                    </label>
                </div>
            </section>

            <section class="card identity-section" aria-labelledby="identity-expiry-heading">
                <h2 id="identity-expiry-heading">"Machine key expiry"</h2>
                <div class="field">
                    <label for="identity-expiry">"Key expiry"</label>
                    <p class="hint" id="identity-expiry-hint">
                        "For machines that sign in through the provider: e.g. 180d, 0 for never, empty for the server's default (node.expiry)."
                    </p>
                    <input
                        id="identity-expiry"
                        type="text"
                        autocomplete="off"
                        spellcheck="false"
                        aria-describedby="identity-expiry-hint"
                        bind:value=fields.expiry
                    />
                </div>
                <div class="field field--check">
                    <input
                        id="identity-expiry-from-token"
                        type="checkbox"
                        bind:checked=fields.use_expiry_from_token
                    />
                    <label for="identity-expiry-from-token">
                        "Expire machine keys with the provider's ID token instead"
                    </label>
                </div>
            </section>

            <div class="identity-actions">
                <button type="submit" class="button" disabled=move || act.pending().get()>
                    {move || if act.pending().get() { "Saving…" } else { "Save identity settings" }}
                </button>
                <Show when=move || current.get().source == IdentitySource::Saved>
                    <button
                        type="button"
                        class="button button--secondary"
                        disabled=move || act.pending().get()
                        on:click=on_reset
                    >
                        "Use the config file's settings"
                    </button>
                </Show>
                <div class="identity-outcome" aria-live="polite">
                    {move || match (act.value().get(), last.get()) {
                        (Some(Ok(s)), Some(Op::Reset)) => {
                            view! {
                                <p class="notice notice--ok" role="status">
                                    "The config file's settings are in force again. "
                                    {status_text(&s)}
                                </p>
                            }
                                .into_any()
                        }
                        (Some(Ok(s)), _) => {
                            view! {
                                <p class="notice notice--ok" role="status">
                                    "Saved. The next sign-in uses these settings. "
                                    {status_text(&s)}
                                </p>
                            }
                                .into_any()
                        }
                        (Some(Err(e)), _) => {
                            view! {
                                <p class="notice notice--error" role="alert">
                                    "Not saved: "
                                    {e.to_string()}
                                </p>
                            }
                                .into_any()
                        }
                        (None, _) => ().into_any(),
                    }}
                </div>
            </div>
        </form>
    }
}

/// A labelled list typed one entry per line.
#[component]
fn ListField(
    id: &'static str,
    label: &'static str,
    hint: &'static str,
    value: RwSignal<String>,
) -> impl IntoView {
    let hint_id = format!("{id}-hint");
    let initial = value.get_untracked();
    view! {
        <div class="field">
            <label for=id>{label}</label>
            <p class="hint" id=hint_id.clone()>{hint}</p>
            <textarea
                id=id
                rows="2"
                spellcheck="false"
                aria-describedby=hint_id
                prop:value=move || value.get()
                on:input=move |ev| value.set(event_target_value(&ev))
            >
                {initial}
            </textarea>
        </div>
    }
}
