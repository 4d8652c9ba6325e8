//! The actions on one machine (approval, rename, tags, routes and exit node, key expiry,
//! delete),
//! shared by the machine list's rows and the machine's own page. One panel is open at a
//! time; delete asks for confirmation first.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;

use leptos::prelude::*;
use leptos::reactive::owner::WeakOwner;

use crate::api::tailnet::{
    approve_machine, approve_machine_routes, delete_machine, disable_machine_expiry,
    expire_machine, rename_machine, set_machine_tags,
};
use crate::components::call::{ServerCall, use_server_call};
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

/// One machine's actions as the admin left them: the menu and panel that are open, what was
/// typed, and the change in flight with its refusal. A page whose rows are rebuilt (a live
/// update refetches and redraws the list) owns it, not the row: a rebuilt row binds to the
/// same state, so an open panel stays open, keeps what was typed, and still shows the
/// answer to a change sent before the rebuild.
#[derive(Clone, Copy)]
struct ActionState {
    call: ServerCall,
    menu_open: RwSignal<bool>,
    panel: RwSignal<Option<Panel>>,
    new_name: RwSignal<String>,
    new_tags: RwSignal<String>,
    /// The subnet routes ticked in the routes panel.
    routes: RwSignal<BTreeSet<String>>,
    exit: RwSignal<bool>,
}

impl ActionState {
    /// Closed, with empty fields: opening a panel fills them (`fill_from`).
    fn new(menu_open: bool) -> Self {
        ActionState {
            call: use_server_call(),
            menu_open: RwSignal::new(menu_open),
            panel: RwSignal::new(None),
            new_name: RwSignal::new(String::new()),
            new_tags: RwSignal::new(String::new()),
            routes: RwSignal::new(BTreeSet::new()),
            exit: RwSignal::new(false),
        }
    }

    /// A panel opens with the machine's values as they are now.
    fn fill_from(self, machine: &MachineSummary) {
        self.new_name.set(machine.name.clone());
        self.new_tags.set(machine.tags.join(", "));
        self.routes.set(
            machine
                .approved_routes
                .iter()
                .filter(|r| !EXIT_ROUTES.contains(&r.as_str()))
                .cloned()
                .collect(),
        );
        self.exit.set(machine.exit_node_approved());
    }
}

/// The actions' state per machine id, provided by a page whose rows are rebuilt.
#[derive(Clone)]
pub struct ActionStates {
    /// The page's owner: state made under it lives as long as the page, not the row. Weak,
    /// as the owner holds this context.
    page: WeakOwner,
    states: StoredValue<HashMap<u64, ActionState>>,
}

impl ActionStates {
    /// Call in the page whose rows are rebuilt; its `MachineActions` find it in context.
    pub fn provide() {
        let page = Owner::current().expect("a page renders under an owner");
        provide_context(ActionStates {
            page: page.downgrade(),
            states: StoredValue::new(HashMap::new()),
        });
    }

    /// Machine `id`'s state, made on its first row.
    fn state(&self, id: u64, menu_open: bool) -> ActionState {
        if let Some(state) = self.states.with_value(|all| all.get(&id).copied()) {
            return state;
        }
        let state = match self.page.upgrade() {
            Some(page) => page.with(|| ActionState::new(menu_open)),
            None => ActionState::new(menu_open),
        };
        self.states.update_value(|all| {
            all.insert(id, state);
        });
        state
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
    let state = match use_context::<ActionStates>() {
        Some(states) => states.state(machine.id, !compact),
        None => ActionState::new(!compact),
    };
    let ActionState {
        call,
        menu_open,
        panel,
        new_name,
        new_tags,
        routes: chosen_routes,
        exit: exit_choice,
    } = state;
    let (hydrated, error) = (call.hydrated, call.error);
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
    let toggle = {
        let machine = machine.clone();
        Callback::new(move |p: Panel| {
            error.set(None);
            if panel.get_untracked() == Some(p) {
                panel.set(None);
            } else {
                state.fill_from(&machine);
                panel.set(Some(p));
            }
        })
    };

    // Routes: every advertised subnet route (and any approved one no longer advertised),
    // each with its approval; plus the exit node when advertised or approved.
    let mut subnet: Vec<String> = machine.subnet_routes().cloned().collect();
    for r in &machine.approved_routes {
        if !EXIT_ROUTES.contains(&r.as_str()) && !subnet.contains(r) {
            subnet.push(r.clone());
        }
    }
    let offers_exit = machine.advertises_exit_node() || machine.exit_node_approved();
    let has_routes = !subnet.is_empty() || offers_exit;
    let key_expiry_disabled = machine.key_expiry.is_none();
    let tagged = !machine.tags.is_empty();
    let waiting = !machine.approved;

    let disabled = move || call.disabled();
    let label = |what: &str| format!("{what} {}", name);

    let routes_view = {
        let subnet = subnet.clone();
        move || {
            let choices = subnet.clone();
            let shown = subnet.clone();
            let save = move |ev: leptos::ev::SubmitEvent| {
                ev.prevent_default();
                // Only what this panel shows: a route ticked before a live update removed
                // it from the machine is not sent.
                let mut routes: Vec<String> = chosen_routes.with_untracked(|chosen| {
                    shown
                        .iter()
                        .filter(|r| chosen.contains(*r))
                        .cloned()
                        .collect()
                });
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
                            .map(|route| {
                                let checked = route.clone();
                                let toggled = route.clone();
                                view! {
                                    <label class="checkbox">
                                        <input
                                            type="checkbox"
                                            prop:checked=move || chosen_routes.with(|c| c.contains(&checked))
                                            on:change=move |ev| {
                                                let on = event_target_checked(&ev);
                                                chosen_routes.update(|c| {
                                                    if on {
                                                        c.insert(toggled.clone());
                                                    } else {
                                                        c.remove(&toggled);
                                                    }
                                                });
                                            }
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

    let approve_label = label("Approve");
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
                    {waiting
                        .then(|| {
                            view! {
                                <button
                                    type="button"
                                    class="button"
                                    aria-label=approve_label.clone()
                                    disabled=disabled
                                    on:click=move |_| run(answerless(approve_machine(id)), false)
                                >
                                    "Approve"
                                </button>
                            }
                        })}
                    <button type="button" class="button button--secondary" aria-label=rename_label disabled=disabled on:click=move |_| toggle.run(Panel::Rename)>
                        "Rename"
                    </button>
                    <button type="button" class="button button--secondary" aria-label=tags_label disabled=disabled on:click=move |_| toggle.run(Panel::Tags)>
                        "Edit tags"
                    </button>
                    {has_routes
                        .then(|| {
                            view! {
                                <button type="button" class="button button--secondary" aria-label=routes_label.clone() disabled=disabled on:click=move |_| toggle.run(Panel::Routes)>
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
                    <button type="button" class="button button--danger" aria-label=delete_label disabled=disabled on:click=move |_| toggle.run(Panel::Delete)>
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
