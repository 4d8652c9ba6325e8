//! Machines: the console's home. Lists devices; while there are none, shows how to join one.

use leptos::html::Code;
use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::get_console_config;
use crate::components::copy_button::CopyButton;
use crate::dto::{AUTHKEY_PLACEHOLDER, ConsoleConfig};

#[component]
pub fn MachinesPage() -> impl IntoView {
    let config = Resource::new(|| (), |_| get_console_config());

    view! {
        <Title text="Machines" />
        <h1>"Machines"</h1>
        <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match config.await {
                    Ok(config) => view! { <NoMachines config /> }.into_any(),
                    Err(error) => {
                        view! {
                            <p class="notice notice--error" role="alert">
                                {error.to_string()}
                            </p>
                        }
                            .into_any()
                    }
                }
            })}
        </Suspense>
    }
}

/// Empty state: the exact command that joins a device to this server.
#[component]
fn NoMachines(config: ConsoleConfig) -> impl IntoView {
    let command = config.join_command(AUTHKEY_PLACEHOLDER);
    let command_ref = NodeRef::<Code>::new();

    view! {
        <section class="empty-state" aria-labelledby="no-machines-heading">
            <h2 id="no-machines-heading">"No machines yet"</h2>
            <p>
                "To add a device, install Tailscale on it and run the command below, with an auth key from "
                <a href="/keys">"Keys"</a> " in place of " <code>{AUTHKEY_PLACEHOLDER}</code> "."
            </p>
            <div class="command">
                <pre class="command__text"><code id="join-command" node_ref=command_ref>{command.clone()}</code></pre>
                <CopyButton text=command target=command_ref what="join command" />
            </div>
        </section>
    }
}
