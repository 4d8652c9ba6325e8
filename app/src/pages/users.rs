//! Users: who owns machines. Create, rename, delete (refused while they own machines, as the
//! server refuses it: their machines must be deleted or re-tagged first).

use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::tailnet::{create_user, delete_user, list_users, rename_user};
use crate::components::call::use_server_call;
use crate::components::notice::{ErrorNotice, Loading};
use crate::dto::tailnet::{MachineQuery, UserRow, short_time};

#[component]
pub fn UsersPage() -> impl IntoView {
    let changed = RwSignal::new(0_u64);
    let users = Resource::new(move || changed.get(), |_| list_users());
    let refetch = Callback::new(move |()| changed.update(|c| *c += 1));

    view! {
        <Title text="Users" />
        <h1>"Users"</h1>
        <CreateUser on_created=refetch />
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                match users.await {
                    Ok(users) if users.is_empty() => view! {
                        <p class="empty-state">"No users yet. Create one above; machines join as a user with a pre-auth key."</p>
                    }
                    .into_any(),
                    Ok(users) => {
                        let rows = users
                            .into_iter()
                            .map(|user| view! { <UserItem user on_changed=refetch /> })
                            .collect_view();
                        view! {
                            <div class="table-wrap">
                                <table class="users responsive">
                                    <thead>
                                        <tr>
                                            <th scope="col">"Name"</th>
                                            <th scope="col">"Machines"</th>
                                            <th scope="col">"Last seen"</th>
                                            <th scope="col">"Created"</th>
                                            <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                                        </tr>
                                    </thead>
                                    <tbody>{rows}</tbody>
                                </table>
                            </div>
                        }
                        .into_any()
                    }
                    Err(error) => view! { <ErrorNotice message=error.to_string() /> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn CreateUser(on_created: Callback<()>) -> impl IntoView {
    let call = use_server_call();
    let name = RwSignal::new(String::new());
    let display_name = RwSignal::new(String::new());
    let email = RwSignal::new(String::new());
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let created = create_user(
            name.get_untracked(),
            display_name.get_untracked(),
            email.get_untracked(),
        );
        call.run(created, move |_| {
            name.set(String::new());
            display_name.set(String::new());
            email.set(String::new());
            on_created.run(());
        });
    };
    view! {
        <form class="user-form" on:submit=submit aria-label="Create a user">
            <label>
                "Name"
                <input type="text" name="name" required autocomplete="off" prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev)) />
            </label>
            <label>
                "Display name"
                <input type="text" name="display_name" autocomplete="off" prop:value=move || display_name.get() on:input=move |ev| display_name.set(event_target_value(&ev)) />
            </label>
            <label>
                "Email"
                <input type="email" name="email" autocomplete="off" prop:value=move || email.get() on:input=move |ev| email.set(event_target_value(&ev)) />
            </label>
            <button type="submit" class="button" disabled=move || call.disabled()>
                "Create user"
            </button>
            {move || call.error.get().map(|message| view! { <ErrorNotice message /> })}
        </form>
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Idle,
    Renaming,
    ConfirmingDelete,
}

#[component]
fn UserItem(user: UserRow, on_changed: Callback<()>) -> impl IntoView {
    let call = use_server_call();
    let error = call.error;
    let mode = RwSignal::new(Mode::Idle);
    let new_name = RwSignal::new(user.name.clone());
    let id = user.id;
    let owns = user.machines;
    let name = user.name.clone();
    let disabled = move || call.disabled();
    let done = move || {
        mode.set(Mode::Idle);
        on_changed.run(());
    };
    let rename = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        call.run(rename_user(id, new_name.get_untracked()), move |_| done());
    };
    let delete = move |_| call.run(delete_user(id), move |()| done());
    let last_seen = if user.online {
        "Online now".to_owned()
    } else {
        user.last_seen
            .as_deref()
            .map(short_time)
            .unwrap_or_else(|| "—".into())
    };
    let subtitle = [user.display_name.clone(), user.email.clone()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" · ");
    // The machine list filtered to this user, built the way the list itself builds its URLs.
    let machines_href = MachineQuery {
        user: Some(name.clone()),
        ..MachineQuery::default()
    }
    .href();
    let rename_label = format!("Rename {name}");
    let delete_label = format!("Delete {name}");
    let confirm_text = if owns == 0 {
        format!("Delete {name}? Their unused pre-auth keys are deleted too.")
    } else {
        String::new()
    };

    view! {
        <tr data-user=user.name.clone()>
            <td data-label="Name">
                <strong>{user.name.clone()}</strong>
                {(!subtitle.is_empty()).then(|| view! { <span class="muted">{subtitle}</span> })}
            </td>
            <td data-label="Machines">
                <a href=machines_href.clone()>{owns}</a>
            </td>
            <td data-label="Last seen">{last_seen}</td>
            <td data-label="Created">{short_time(&user.created)}</td>
            <td class="user-actions">
                <button type="button" class="button button--secondary" aria-label=rename_label disabled=disabled
                    on:click=move |_| { error.set(None); mode.set(if mode.get_untracked() == Mode::Renaming { Mode::Idle } else { Mode::Renaming }) }>
                    "Rename"
                </button>
                <button type="button" class="button button--danger" aria-label=delete_label disabled=disabled
                    on:click=move |_| { error.set(None); mode.set(Mode::ConfirmingDelete) }>
                    "Delete…"
                </button>
                {move || match mode.get() {
                    Mode::Idle => ().into_any(),
                    Mode::Renaming => view! {
                        <form class="inline-form" on:submit=rename>
                            <label>"New name"
                                <input type="text" required autocomplete="off" prop:value=move || new_name.get() on:input=move |ev| new_name.set(event_target_value(&ev)) />
                            </label>
                            <button type="submit" class="button" disabled=disabled>"Save name"</button>
                        </form>
                    }.into_any(),
                    Mode::ConfirmingDelete if owns > 0 => view! {
                        <p class="notice" role="alert">
                            {format!("{owns} machine(s) belong to this user. Delete them or give them tags first; a user who owns machines cannot be deleted.")}
                            " " <a href=machines_href.clone()>"Show their machines"</a>
                        </p>
                    }.into_any(),
                    Mode::ConfirmingDelete => view! {
                        <div class="inline-form" role="group" aria-label="Confirm delete">
                            <p>{confirm_text.clone()}</p>
                            <button type="button" class="button button--danger" disabled=disabled on:click=delete>"Delete user"</button>
                            <button type="button" class="button button--secondary" on:click=move |_| mode.set(Mode::Idle)>"Cancel"</button>
                        </div>
                    }.into_any(),
                }}
                {move || error.get().map(|message| view! { <ErrorNotice message /> })}
            </td>
        </tr>
    }
}
