//! Creating a pre-auth key: the form, then its secret, shown once, with the exact join
//! command and copy buttons. Used by the Keys page and the Machines page's empty state.

use leptos::html::Code;
use leptos::prelude::*;

use crate::api::tailnet::create_preauth_key;
use crate::components::call::use_server_call;
use crate::components::copy_button::CopyButton;
use crate::components::notice::ErrorNotice;
use crate::dto::ConsoleConfig;
use crate::dto::tailnet::NewPreAuthKey;

#[component]
pub fn PreAuthKeyForm(
    config: ConsoleConfig,
    /// (id, name) of the users a key may belong to.
    users: Vec<(u64, String)>,
    /// Runs after a key is created (to refetch a key list); none where nothing lists keys.
    #[prop(optional, into)]
    on_created: Option<Callback<()>>,
) -> impl IntoView {
    let user = RwSignal::new(
        users
            .first()
            .map(|(id, _)| id.to_string())
            .unwrap_or_default(),
    );
    let tags = RwSignal::new(String::new());
    let reusable = RwSignal::new(false);
    let ephemeral = RwSignal::new(false);
    let expiration = RwSignal::new("1h".to_owned());
    let call = use_server_call();
    let created = RwSignal::new(None::<String>);

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let key = NewPreAuthKey {
            user: user.get_untracked().parse().ok(),
            tags: tags.get_untracked(),
            reusable: reusable.get_untracked(),
            ephemeral: ephemeral.get_untracked(),
            expiration: expiration.get_untracked(),
        };
        call.run(create_preauth_key(key), move |secret| {
            created.set(Some(secret.secret));
            if let Some(on_created) = on_created {
                on_created.run(());
            }
        });
    };

    let user_options = users
        .into_iter()
        .map(|(id, name)| view! { <option value=id.to_string()>{name}</option> })
        .collect_view();

    view! {
        <form class="key-form" on:submit=submit aria-label="Create a pre-auth key">
            <label>
                "User"
                <select
                    name="user"
                    on:change=move |ev| user.set(event_target_value(&ev))
                    prop:value=move || user.get()
                >
                    {user_options}
                    <option value="">"None (tagged key)"</option>
                </select>
            </label>
            <label>
                "Tags"
                <input
                    type="text"
                    name="tags"
                    placeholder="tag:server"
                    autocomplete="off"
                    prop:value=move || tags.get()
                    on:input=move |ev| tags.set(event_target_value(&ev))
                />
            </label>
            <label>
                "Expires in"
                <input
                    type="text"
                    name="expiration"
                    autocomplete="off"
                    prop:value=move || expiration.get()
                    on:input=move |ev| expiration.set(event_target_value(&ev))
                />
            </label>
            <label class="checkbox">
                <input type="checkbox" name="reusable" on:change=move |ev| reusable.set(event_target_checked(&ev)) />
                " Reusable"
            </label>
            <label class="checkbox">
                <input type="checkbox" name="ephemeral" on:change=move |ev| ephemeral.set(event_target_checked(&ev)) />
                " Ephemeral"
            </label>
            <button type="submit" class="button" disabled=move || call.disabled()>
                "Create pre-auth key"
            </button>
            {move || call.error.get().map(|message| view! { <ErrorNotice message /> })}
        </form>
        {move || {
            let config = config.clone();
            created.get().map(|secret| view! { <ShownOnce secret config /> })
        }}
    }
}

/// A new secret and the join command that uses it, with copy buttons.
#[component]
fn ShownOnce(secret: String, config: ConsoleConfig) -> impl IntoView {
    let key_ref = NodeRef::<Code>::new();
    let command_ref = NodeRef::<Code>::new();
    let command = config.join_command(&secret);
    view! {
        <section class="secret" aria-labelledby="new-preauth-key-heading">
            <h3 id="new-preauth-key-heading">"New pre-auth key"</h3>
            <p>"Copy it now: it is shown only once and cannot be retrieved later."</p>
            <div class="command">
                <pre class="command__text"><code id="new-preauth-key" node_ref=key_ref>{secret.clone()}</code></pre>
                <CopyButton text=secret target=key_ref what="pre-auth key" />
            </div>
            <p>"Join a device with it:"</p>
            <div class="command">
                <pre class="command__text"><code id="new-join-command" node_ref=command_ref>{command.clone()}</code></pre>
                <CopyButton text=command target=command_ref what="join command with this key" />
            </div>
        </section>
    }
}
