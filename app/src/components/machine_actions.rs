//! The actions on one machine (rename, tags, routes and exit node, key expiry, delete),
//! shared by the machine list's rows and the machine's own page. One panel is open at a
//! time; delete asks for confirmation first.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use leptos::prelude::*;

use crate::api::tailnet::{
    approve_machine_routes, delete_machine, disable_machine_expiry, expire_machine, rename_machine,
    set_machine_tags,
};
use crate::components::call::use_server_call;
use crate::components::notice::ErrorNotice;
use crate::dto::ConsoleError;
use crate::dto::tailnet::{EXIT_ROUTES, MachineSummary};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Panel {
    Rename,
    Tags,
    Routes,
    Delete,
}

type Call = Pin<Box<dyn Future<Output = Result<(), ConsoleError>>>>;

/// What an admin has open or typed in one machine's actions.
#[derive(Debug, Clone, PartialEq)]
struct Draft {
    menu_open: bool,
    panel: Option<Panel>,
    new_name: String,
    new_tags: String,
    routes: Vec<(String, bool)>,
    exit: bool,
}

/// Open panels and unsaved input per machine id, held by a page whose rows are rebuilt
/// (a live update refetches and redraws the list): a rebuilt row's actions start from its
/// machine's draft, so an open panel stays open and keeps what was typed.
#[derive(Clone, Copy)]
pub struct ActionDrafts(StoredValue<HashMap<u64, Draft>>);

impl ActionDrafts {
    /// Call in the page whose rows are rebuilt; its `MachineActions` find it in context.
    pub fn provide() {
        provide_context(ActionDrafts(StoredValue::new(HashMap::new())));
    }
}

/// A change whose answer (the updated machine) the actions do not need: the owner refetches.
fn answerless<T>(call: impl Future<Output = Result<T, ConsoleError>> + 'static) -> Call {
    Box::pin(async move { call.await.map(|_| ()) })
}

/// `on_changed` runs after any successful change (refetch); `on_deleted` after a delete.
#[component]
pub fn MachineActions(
    machine: MachineSummary,
    #[prop(into)] on_changed: Callback<()>,
    #[prop(into)] on_deleted: Callback<()>,
    /// Show the panels' buttons as a menu ("Actions") rather than laid out.
    #[prop(default = true)]
    compact: bool,
) -> impl IntoView {
    let call = use_server_call();
    let (hydrated, error) = (call.hydrated, call.error);
    let drafts = use_context::<ActionDrafts>();
    let draft = drafts.and_then(|d| d.0.with_value(|all| all.get(&machine.id).cloned()));
    let menu_open = RwSignal::new(draft.as_ref().map_or(!compact, |d| d.menu_open));
    let panel = RwSignal::new(draft.as_ref().and_then(|d| d.panel));
    let id = machine.id;
    let name = machine.name.clone();
    let panel_id = format!("machine-actions-{id}");

    let run = move |change: Call, deleted: bool| {
        call.run(change, move |()| {
            // Done: the panel closes, and so does a row's menu.
            panel.set(None);
            if compact {
                menu_open.set(false);
            }
            if deleted {
                on_deleted.run(());
            } else {
                on_changed.run(());
            }
        });
    };
    let toggle = move |p: Panel| {
        error.set(None);
        panel.update(|open| *open = if *open == Some(p) { None } else { Some(p) });
    };

    let new_name = RwSignal::new(
        draft
            .as_ref()
            .map_or_else(|| machine.name.clone(), |d| d.new_name.clone()),
    );
    let new_tags = RwSignal::new(
        draft
            .as_ref()
            .map_or_else(|| machine.tags.join(", "), |d| d.new_tags.clone()),
    );
    // Routes: every advertised subnet route (and any approved one no longer advertised),
    // each with its approval; plus the exit node when advertised or approved.
    let mut subnet: Vec<String> = machine.subnet_routes().cloned().collect();
    for r in &machine.approved_routes {
        if !EXIT_ROUTES.contains(&r.as_str()) && !subnet.contains(r) {
            subnet.push(r.clone());
        }
    }
    let route_choices: Vec<(String, RwSignal<bool>)> = subnet
        .into_iter()
        .map(|r| {
            let drafted = draft
                .as_ref()
                .and_then(|d| d.routes.iter().find(|(dr, _)| *dr == r).map(|(_, on)| *on));
            let on = drafted.unwrap_or_else(|| machine.approved_routes.contains(&r));
            (r, RwSignal::new(on))
        })
        .collect();
    let offers_exit = machine.advertises_exit_node() || machine.exit_node_approved();
    let exit_choice = RwSignal::new(
        draft
            .as_ref()
            .map_or(machine.exit_node_approved(), |d| d.exit),
    );
    if let Some(drafts) = drafts {
        // Keep this machine's draft current while anything is open; forget it once closed,
        // so the next opening starts from the machine's current values.
        let route_choices = route_choices.clone();
        let default_open = !compact;
        Effect::new(move |_| {
            let draft = Draft {
                menu_open: menu_open.get(),
                panel: panel.get(),
                new_name: new_name.get(),
                new_tags: new_tags.get(),
                routes: route_choices
                    .iter()
                    .map(|(r, on)| (r.clone(), on.get()))
                    .collect(),
                exit: exit_choice.get(),
            };
            drafts.0.update_value(|all| {
                if draft.menu_open == default_open && draft.panel.is_none() {
                    all.remove(&id);
                } else {
                    all.insert(id, draft);
                }
            });
        });
    }
    let has_routes = !route_choices.is_empty() || offers_exit;
    let key_expiry_disabled = machine.key_expiry.is_none();
    let tagged = !machine.tags.is_empty();

    let disabled = move || call.disabled();
    let label = |what: &str| format!("{what} {}", name);

    let routes_view = {
        let route_choices = route_choices.clone();
        move || {
            let choices = route_choices.clone();
            let chosen = route_choices.clone();
            let save = move |ev: leptos::ev::SubmitEvent| {
                ev.prevent_default();
                let mut routes: Vec<String> = chosen
                    .iter()
                    .filter(|(_, on)| on.get_untracked())
                    .map(|(r, _)| r.clone())
                    .collect();
                if exit_choice.get_untracked() {
                    routes.extend(EXIT_ROUTES.iter().map(|r| r.to_string()));
                }
                run(answerless(approve_machine_routes(id, routes)), false);
            };
            view! {
                <form class="machine-actions__panel" on:submit=save>
                    <fieldset>
                        <legend>"Approved routes"</legend>
                        {choices
                            .into_iter()
                            .map(|(route, on)| {
                                view! {
                                    <label class="checkbox">
                                        <input
                                            type="checkbox"
                                            prop:checked=move || on.get()
                                            on:change=move |ev| on.set(event_target_checked(&ev))
                                        />
                                        " " {route}
                                    </label>
                                }
                            })
                            .collect_view()}
                        {offers_exit
                            .then(|| {
                                view! {
                                    <label class="checkbox">
                                        <input
                                            type="checkbox"
                                            prop:checked=move || exit_choice.get()
                                            on:change=move |ev| exit_choice.set(event_target_checked(&ev))
                                        />
                                        " Use as exit node"
                                    </label>
                                }
                            })}
                    </fieldset>
                    <button type="submit" class="button" disabled=disabled>
                        "Save routes"
                    </button>
                </form>
            }
        }
    };

    let panel_view = {
        let name = machine.name.clone();
        move || {
            match panel.get() {
            None => ().into_any(),
            Some(Panel::Rename) => view! {
                <form
                    class="machine-actions__panel"
                    on:submit=move |ev| {
                        ev.prevent_default();
                        let name = new_name.get_untracked();
                        run(answerless(rename_machine(id, name)), false);
                    }
                >
                    <label>
                        "New name"
                        <input
                            type="text"
                            name="name"
                            required
                            autocomplete="off"
                            prop:value=move || new_name.get()
                            on:input=move |ev| new_name.set(event_target_value(&ev))
                        />
                    </label>
                    <button type="submit" class="button" disabled=disabled>
                        "Save name"
                    </button>
                </form>
            }
            .into_any(),
            Some(Panel::Tags) => view! {
                <form
                    class="machine-actions__panel"
                    on:submit=move |ev| {
                        ev.prevent_default();
                        let tags = new_tags.get_untracked();
                        run(answerless(set_machine_tags(id, tags)), false);
                    }
                >
                    <label>
                        "Tags (comma-separated, e.g. tag:server)"
                        <input
                            type="text"
                            name="tags"
                            autocomplete="off"
                            prop:value=move || new_tags.get()
                            on:input=move |ev| new_tags.set(event_target_value(&ev))
                        />
                    </label>
                    <button type="submit" class="button" disabled=disabled>
                        "Save tags"
                    </button>
                </form>
            }
            .into_any(),
            Some(Panel::Routes) => routes_view().into_any(),
            Some(Panel::Delete) => view! {
                <div class="machine-actions__panel machine-actions__panel--danger" role="group" aria-label="Confirm delete">
                    <p>
                        "Delete " <strong>{name.clone()}</strong>
                        "? It is disconnected and must be registered again to rejoin."
                    </p>
                    <button
                        type="button"
                        class="button button--danger"
                        disabled=disabled
                        on:click=move |_| run(answerless(delete_machine(id)), true)
                    >
                        "Delete machine"
                    </button>
                    <button type="button" class="button button--secondary" on:click=move |_| panel.set(None)>
                        "Cancel"
                    </button>
                </div>
            }
            .into_any(),
        }
        }
    };

    let rename_label = label("Rename");
    let tags_label = label("Edit tags of");
    let routes_label = label("Routes of");
    let expire_label = label("Expire key of");
    let no_expiry_label = label("Disable key expiry of");
    let delete_label = label("Delete");
    let menu_label = label("Actions for");
    let panel_id_attr = panel_id.clone();

    view! {
        <div class="machine-actions" class:machine-actions--compact=compact>
            {compact
                .then(|| {
                    view! {
                        <button
                            type="button"
                            class="button button--secondary machine-actions__toggle"
                            aria-expanded=move || menu_open.get().to_string()
                            aria-controls=panel_id.clone()
                            aria-label=menu_label.clone()
                            disabled=move || !hydrated.get()
                            on:click=move |_| {
                                menu_open.update(|o| *o = !*o);
                                panel.set(None);
                            }
                        >
                            "Actions"
                        </button>
                    }
                })}
            <div id=panel_id_attr class="machine-actions__menu" hidden=move || !menu_open.get()>
                <div class="machine-actions__buttons">
                    <button type="button" class="button button--secondary" aria-label=rename_label disabled=disabled on:click=move |_| toggle(Panel::Rename)>
                        "Rename"
                    </button>
                    <button type="button" class="button button--secondary" aria-label=tags_label disabled=disabled on:click=move |_| toggle(Panel::Tags)>
                        "Edit tags"
                    </button>
                    {has_routes
                        .then(|| {
                            view! {
                                <button type="button" class="button button--secondary" aria-label=routes_label.clone() disabled=disabled on:click=move |_| toggle(Panel::Routes)>
                                    "Routes"
                                </button>
                            }
                        })}
                    <button
                        type="button"
                        class="button button--secondary"
                        aria-label=expire_label
                        disabled=disabled
                        on:click=move |_| run(answerless(expire_machine(id)), false)
                    >
                        "Expire key"
                    </button>
                    {(!key_expiry_disabled && !tagged)
                        .then(|| {
                            view! {
                                <button
                                    type="button"
                                    class="button button--secondary"
                                    aria-label=no_expiry_label.clone()
                                    disabled=disabled
                                    on:click=move |_| run(answerless(disable_machine_expiry(id)), false)
                                >
                                    "Disable key expiry"
                                </button>
                            }
                        })}
                    <button type="button" class="button button--danger" aria-label=delete_label disabled=disabled on:click=move |_| toggle(Panel::Delete)>
                        "Delete…"
                    </button>
                </div>
                {panel_view}
                {move || {
                    error
                        .get()
                        .map(|message| view! { <ErrorNotice message /> })
                }}
            </div>
        </div>
    }
}
