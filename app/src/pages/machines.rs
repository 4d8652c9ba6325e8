//! Machines: the console's home. A searchable, filterable, paged list of devices (filters
//! live in the URL query, so a filtered view can be bookmarked and survives a reload) that
//! updates itself while open; while there are none, shows how to join one.

use leptos::html::Code;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::NavigateOptions;
use leptos_router::components::{A, Form};
use leptos_router::hooks::{use_navigate, use_query_map};

use crate::api::get_console_config;
use crate::api::tailnet::{SetDeviceApproval, list_keys, list_machines};
use crate::components::copy_button::CopyButton;
use crate::components::live::{use_hydrated, use_machine_events};
use crate::components::machine_actions::{ActionStates, MachineActions};
use crate::components::notice::{ErrorNotice, Loading};
use crate::components::preauth_form::PreAuthKeyForm;
use crate::dto::tailnet::{
    MachineList, MachineQuery, MachineRole, MachineStatus, MachineSummary, short_time,
};
use crate::dto::{AUTHKEY_PLACEHOLDER, ConsoleConfig};

#[component]
pub fn MachinesPage() -> impl IntoView {
    let params = use_query_map();
    let query = Memo::new(move |_| params.with(|p| MachineQuery::from_params(|k| p.get_str(k))));
    let live = use_machine_events();
    // Rows are rebuilt on every refetch; open action panels survive it.
    ActionStates::provide();
    // Bumped after each change made from this page.
    let changed = RwSignal::new(0_u64);
    let config = Resource::new(|| (), |_| get_console_config());
    let list = Resource::new(
        move || (query.get().to_query_string(), live.get(), changed.get()),
        |(qs, _, _)| list_machines(qs),
    );
    let refetch = Callback::new(move |()| changed.update(|c| *c += 1));

    view! {
        <Title text="Machines" />
        <h1>"Machines"</h1>
        // Transition keeps the current rows on screen while a refetch (live update) runs.
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                let config = config.await;
                let list = list.await;
                match (config, list) {
                    (Ok(config), Ok(list)) => {
                        let approval = view! {
                            <DeviceApproval waiting=list.waiting required=list.approval_required on_changed=refetch />
                        };
                        if list.total == 0 {
                            view! { {approval} <NoMachines config /> }.into_any()
                        } else {
                            view! {
                                {approval}
                                <MachineTable list query=query.get_untracked() on_changed=refetch />
                            }
                                .into_any()
                        }
                    }
                    (Err(error), _) | (_, Err(error)) => view! { <ErrorNotice message=error.to_string() /> }.into_any(),
                }
            })}
        </Transition>
    }
}

/// Device approval: the machines that wait for an administrator (a link to them), and the
/// switch that makes machines registering from now on wait.
#[component]
fn DeviceApproval(waiting: usize, required: bool, on_changed: Callback<()>) -> impl IntoView {
    let switch = ServerAction::<SetDeviceApproval>::new();
    let hydrated = use_hydrated();
    let pending = switch.pending();
    Effect::new(move |_| {
        if let Some(Ok(_)) = switch.value().get() {
            on_changed.run(());
        }
    });
    let refusal = move || {
        switch
            .value()
            .get()
            .and_then(Result::err)
            .map(|e| view! { <ErrorNotice message=e.to_string() /> })
    };
    let (state, button) = if required {
        (
            "Device approval is on: new machines wait for an administrator.",
            "Turn off",
        )
    } else {
        (
            "Device approval is off: new machines join at once.",
            "Turn on",
        )
    };
    let waiting_text = match waiting {
        1 => "1 machine is waiting for approval".to_owned(),
        n => format!("{n} machines are waiting for approval"),
    };
    view! {
        <section class="device-approval" aria-label="Device approval">
            {(waiting > 0)
                .then(|| {
                    view! {
                        <p class="device-approval__waiting" role="status">
                            <A href="/machines?status=waiting">{waiting_text}</A>
                        </p>
                    }
                })}
            <p class="device-approval__setting">
                <span>{state}</span>
                <button
                    type="button"
                    class="button button--secondary"
                    aria-label=format!("{button} device approval")
                    disabled=move || !hydrated.get() || pending.get()
                    on:click=move |_| {
                        switch.dispatch(SetDeviceApproval { required: !required });
                    }
                >
                    {button}
                </button>
            </p>
            {refusal}
        </section>
    }
}

#[component]
fn MachineTable(
    list: MachineList,
    query: MachineQuery,
    #[prop(into)] on_changed: Callback<()>,
) -> impl IntoView {
    let navigate = use_navigate();
    // A change of a menu applies at once; the text search applies on Enter or "Search".
    let go = move |q: MachineQuery| navigate(&q.href(), NavigateOptions::default());
    let filter_select = {
        let query = query.clone();
        move |field: &'static str| {
            let query = query.clone();
            let go = go.clone();
            move |ev: leptos::ev::Event| {
                let value = event_target_value(&ev);
                let value = Some(value).filter(|v| !v.is_empty());
                let mut next = query.clone();
                next.page = 1;
                match field {
                    "user" => next.user = value,
                    "tag" => next.tag = value,
                    "status" => next.status = value.and_then(|v| MachineStatus::parse(&v)),
                    _ => next.role = value.and_then(|v| MachineRole::parse(&v)),
                }
                go(next);
            }
        }
    };

    let summary = if query.is_filtered() {
        format!("{} of {} machines match", list.matching, list.total)
    } else {
        format!("{} machines", list.total)
    };
    let option = |value: String, label: String, selected: bool| {
        view! { <option value=value selected=selected>{label}</option> }
    };
    let users = list
        .users
        .iter()
        .map(|u| option(u.clone(), u.clone(), query.user.as_deref() == Some(u)))
        .collect_view();
    let tags = list
        .tags
        .iter()
        .map(|t| option(t.clone(), t.clone(), query.tag.as_deref() == Some(t)))
        .collect_view();
    let statuses = [
        MachineStatus::Online,
        MachineStatus::Offline,
        MachineStatus::Expired,
        MachineStatus::Waiting,
    ]
    .into_iter()
    .map(|s| {
        option(
            s.as_str().into(),
            s.as_str().into(),
            query.status == Some(s),
        )
    })
    .collect_view();
    let roles = [
        (MachineRole::SubnetRouter, "subnet router"),
        (MachineRole::ExitNode, "exit node"),
    ]
    .into_iter()
    .map(|(r, label)| option(r.as_str().into(), label.into(), query.role == Some(r)))
    .collect_view();

    let page_link = |page: usize| {
        let mut q = query.clone();
        q.page = page;
        q.href()
    };
    let prev = (list.page > 1).then(|| page_link(list.page - 1));
    let next = (list.page < list.pages).then(|| page_link(list.page + 1));
    let rows = list
        .rows
        .into_iter()
        .map(|m| view! { <MachineRow machine=m on_changed /> })
        .collect_view();

    view! {
        // A plain GET form: works before hydration too; the router handles it after.
        <Form method="GET" action="/machines" attr:class="machine-filters" attr:role="search">
            <label class="machine-filters__search">
                <span>"Search"</span>
                <input type="search" name="q" value=query.q.clone() placeholder="Name, owner, tag, address, OS" />
            </label>
            <label>
                <span>"User"</span>
                <select name="user" on:change=filter_select("user")>
                    <option value="">"All users"</option>
                    {users}
                </select>
            </label>
            <label>
                <span>"Tag"</span>
                <select name="tag" on:change=filter_select("tag")>
                    <option value="">"All tags"</option>
                    {tags}
                </select>
            </label>
            <label>
                <span>"Status"</span>
                <select name="status" on:change=filter_select("status")>
                    <option value="">"Any status"</option>
                    {statuses}
                </select>
            </label>
            <label>
                <span>"Role"</span>
                <select name="role" on:change=filter_select("role")>
                    <option value="">"Any role"</option>
                    {roles}
                </select>
            </label>
            <button type="submit" class="button">"Search"</button>
            {query.is_filtered().then(|| view! { <A href="/machines" attr:class="machine-filters__clear">"Clear filters"</A> })}
        </Form>
        <p class="machine-count" role="status">{summary}</p>
        <div class="table-wrap">
            <table class="machines responsive">
                <thead>
                    <tr>
                        <th scope="col">"Machine"</th>
                        <th scope="col">"Owner / tags"</th>
                        <th scope="col">"Addresses"</th>
                        <th scope="col">"OS / version"</th>
                        <th scope="col">"Status"</th>
                        <th scope="col">"Key expiry"</th>
                        <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                    </tr>
                </thead>
                <tbody>{rows}</tbody>
            </table>
        </div>
        {(list.pages > 1)
            .then(|| {
                view! {
                    <nav class="pager" aria-label="Pages">
                        {prev.map(|href| view! { <A href=href attr:rel="prev">"Previous"</A> })}
                        <span>{format!("Page {} of {}", list.page, list.pages)}</span>
                        {next.map(|href| view! { <A href=href attr:rel="next">"Next"</A> })}
                    </nav>
                }
            })}
    }
}

#[component]
fn MachineRow(machine: MachineSummary, on_changed: Callback<()>) -> impl IntoView {
    let status = machine.status();
    let status_text = match status {
        MachineStatus::Online => "Online".to_owned(),
        MachineStatus::Expired => "Expired".to_owned(),
        MachineStatus::Waiting => "Waiting for approval".to_owned(),
        MachineStatus::Offline => match &machine.last_seen {
            Some(t) => format!("Last seen {}", short_time(t)),
            None => "Never connected".to_owned(),
        },
    };
    let owner = if machine.tags.is_empty() {
        machine.user.clone().unwrap_or_default()
    } else {
        machine.tags.join(", ")
    };
    let expiry = match &machine.key_expiry {
        None => "No expiry".to_owned(),
        Some(t) if machine.expired => format!("Expired {}", short_time(t)),
        Some(t) => short_time(t),
    };
    let awaiting = machine.routes_awaiting_approval();
    let addresses = machine
        .addresses
        .iter()
        .map(|a| {
            let target = NodeRef::<Code>::new();
            view! {
                <li>
                    <code node_ref=target>{a.clone()}</code>
                    <CopyButton text=a.clone() target what="address" />
                </li>
            }
        })
        .collect_view();
    let href = format!("/machines/{}", machine.id);
    let version = machine
        .client_version
        .split('-')
        .next()
        .unwrap_or_default()
        .to_owned();
    let name = machine.name.clone();
    let link_text = machine.name.clone();
    let hostname = (machine.hostname != machine.name).then(|| machine.hostname.clone());
    let exit_node = machine.exit_node_approved();
    let os = machine.os.clone();

    view! {
        <tr data-machine=name data-status=status.as_str()>
            <td data-label="Machine">
                <A href=href attr:class="machine-name">{link_text}</A>
                {hostname.map(|h| view! { <span class="muted">{h}</span> })}
                {(!awaiting.is_empty())
                    .then(|| {
                        view! {
                            <span class="badge badge--warn">
                                {format!("Awaiting approval: {}", awaiting.join(", "))}
                            </span>
                        }
                    })}
                {exit_node.then(|| view! { <span class="badge">"Exit node"</span> })}
            </td>
            <td data-label="Owner / tags">{owner}</td>
            <td data-label="Addresses">
                <ul class="addresses">{addresses}</ul>
            </td>
            <td data-label="OS / version">{format!("{os} {version}")}</td>
            <td data-label="Status">
                <span class=format!("status status--{}", status.as_str())>{status_text}</span>
            </td>
            <td data-label="Key expiry">{expiry}</td>
            <td>
                <MachineActions machine on_changed on_deleted=on_changed />
            </td>
        </tr>
    }
}

/// Empty state: the exact command that joins a device to this server, and a quick way to
/// create the key it needs (then the complete command with that key is offered).
#[component]
fn NoMachines(config: ConsoleConfig) -> impl IntoView {
    let command = config.join_command(AUTHKEY_PLACEHOLDER);
    let command_ref = NodeRef::<Code>::new();
    let keys = Resource::new(|| (), |_| list_keys());

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
            <Suspense fallback=|| ()>
                {move || {
                    let config = config.clone();
                    Suspend::new(async move {
                        let overview = keys.await.ok()?;
                        if overview.users.is_empty() && overview.preauth.is_empty() {
                            return None;
                        }
                        let usable = overview.preauth.iter().filter(|k| k.usable()).count();
                        Some(view! {
                            <details class="quick-key">
                                <summary>"Create a pre-auth key and get the complete command"</summary>
                                {(usable > 0).then(|| view! {
                                    <p>{format!(
                                        "{usable} usable pre-auth key(s) exist, but their secrets were shown only when they were created; create a new one here to get the complete command."
                                    )}</p>
                                })}
                                // No refetch on create: the list would re-render this empty state and lose the
                                // secret; the machine that joins with it arrives by the live updates.
                                <PreAuthKeyForm config users=overview.users />
                            </details>
                        })
                    })
                }}
            </Suspense>
        </section>
    }
}
