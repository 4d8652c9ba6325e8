//! One machine: every attribute the server knows, its routes (approve / unapprove) and the
//! same actions as the list. Updates itself while open.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::NavigateOptions;
use leptos_router::hooks::{use_navigate, use_params_map};

use crate::api::tailnet::{approve_machine_routes, get_machine};
use crate::components::call::{ServerCall, use_server_call};
use crate::components::live::use_machine_events;
use crate::components::machine_actions::{ActionStates, MachineActions};
use crate::components::notice::{ErrorNotice, Loading};
use crate::dto::ConsoleError;
use crate::dto::tailnet::{EXIT_ROUTES, MachineDetail, short_time};

#[component]
pub fn MachinePage() -> impl IntoView {
    let params = use_params_map();
    let id =
        Memo::new(move |_| params.with(|p| p.get_str("id").and_then(|s| s.parse::<u64>().ok())));
    let live = use_machine_events();
    // The page is rebuilt on every refetch; open action panels and their answers survive it.
    ActionStates::provide();
    // The routes card's approvals, held here for the same reason: an answer that arrives
    // after a refetch redrew the card is shown on the new card.
    let routes_call = use_server_call();
    let changed = RwSignal::new(0_u64);
    let machine = Resource::new(
        move || (id.get(), live.get(), changed.get()),
        |(id, _, _)| async move {
            match id {
                Some(id) => get_machine(id).await,
                None => Err(ConsoleError::NotFound("machine".into())),
            }
        },
    );
    let refetch = Callback::new(move |()| changed.update(|c| *c += 1));
    let navigate = use_navigate();
    let deleted = Callback::new(move |()| navigate("/machines", NavigateOptions::default()));

    view! {
        <Title text="Machine" />
        <p class="breadcrumb"><a href="/machines">"Machines"</a></p>
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                match machine.await {
                    Ok(detail) => view! { <MachineDetailView detail routes_call on_changed=refetch on_deleted=deleted /> }.into_any(),
                    Err(error) => view! {
                        <h1>"Machine"</h1>
                        <ErrorNotice message=error.to_string() />
                    }
                    .into_any(),
                }
            })}
        </Transition>
    }
}

fn or_none(text: &str) -> String {
    if text.is_empty() {
        "—".into()
    } else {
        text.to_owned()
    }
}

#[component]
fn MachineDetailView(
    detail: MachineDetail,
    routes_call: ServerCall,
    on_changed: Callback<()>,
    on_deleted: Callback<()>,
) -> impl IntoView {
    let m = detail.summary.clone();
    let status = m.status();
    let facts: Vec<(&'static str, String)> = vec![
        ("MagicDNS name", m.fqdn.clone()),
        ("Hostname", m.hostname.clone()),
        (
            "Owner",
            m.user.clone().unwrap_or_else(|| "— (tagged)".into()),
        ),
        ("Tags", or_none(&m.tags.join(", "))),
        ("Addresses", m.addresses.join(", ")),
        ("OS", or_none(&m.os)),
        ("Client version", or_none(&m.client_version)),
        ("Status", status.as_str().into()),
        (
            "Last seen",
            m.last_seen
                .as_deref()
                .map(short_time)
                .unwrap_or_else(|| "never".into()),
        ),
        ("Created", short_time(&m.created)),
        (
            "Key expiry",
            m.key_expiry
                .as_deref()
                .map(short_time)
                .unwrap_or_else(|| "disabled".into()),
        ),
        ("Registered with", detail.register_method.clone()),
        (
            "Ephemeral",
            if detail.ephemeral { "yes" } else { "no" }.into(),
        ),
        ("Node key", detail.node_key.clone()),
        ("Machine key", detail.machine_key.clone()),
        ("Disco key", detail.disco_key.clone()),
        (
            "Home DERP region",
            if detail.home_derp == 0 {
                "—".into()
            } else {
                detail.home_derp.to_string()
            },
        ),
        ("Endpoints", or_none(&detail.endpoints.join(", "))),
    ];
    let facts = facts
        .into_iter()
        .map(|(k, v)| view! { <dt>{k}</dt> <dd>{v}</dd> })
        .collect_view();
    let net_info = if detail.net_info.is_empty() {
        view! { <p class="muted">"The client has reported no network facts."</p> }.into_any()
    } else {
        let rows = detail
            .net_info
            .iter()
            .map(|(k, v)| view! { <dt>{k.clone()}</dt> <dd>{v.clone()}</dd> })
            .collect_view();
        view! { <dl class="facts">{rows}</dl> }.into_any()
    };

    view! {
        <Title text=m.name.clone() />
        <h1>
            {m.name.clone()} " "
            <span class=format!("status status--{}", status.as_str())>{status.as_str()}</span>
        </h1>
        <MachineActions machine=m.clone() on_changed on_deleted compact=false />
        <div class="machine-cards">
            <section class="card" aria-labelledby="machine-facts">
                <h2 id="machine-facts">"Machine"</h2>
                <dl class="facts">{facts}</dl>
            </section>
            <RoutesCard detail=detail.clone() call=routes_call on_changed />
            <section class="card" aria-labelledby="machine-netinfo">
                <h2 id="machine-netinfo">"Network"</h2>
                {net_info}
            </section>
        </div>
    }
}

/// Approved, awaiting approval and exit node, each with its own approve / unapprove.
#[component]
fn RoutesCard(detail: MachineDetail, call: ServerCall, on_changed: Callback<()>) -> impl IntoView {
    let m = detail.summary;
    let id = m.id;
    let approved = m.approved_routes.clone();

    // Sets `route` (or both exit routes) approved or not, keeping the rest.
    let set = move |routes: Vec<String>, approve: bool| {
        let mut next: Vec<String> = approved.clone();
        next.retain(|r| !routes.contains(r));
        if approve {
            next.extend(routes);
        }
        call.run(approve_machine_routes(id, next), move |_| {
            on_changed.run(())
        });
    };
    let exit: Vec<String> = EXIT_ROUTES.iter().map(|r| r.to_string()).collect();
    let mut rows: Vec<(String, Vec<String>, bool, bool)> = Vec::new(); // label, routes, advertised, approved
    for r in m.subnet_routes() {
        rows.push((
            r.clone(),
            vec![r.clone()],
            true,
            m.approved_routes.contains(r),
        ));
    }
    for r in &m.approved_routes {
        if !EXIT_ROUTES.contains(&r.as_str()) && !m.advertised_routes.contains(r) {
            rows.push((r.clone(), vec![r.clone()], false, true));
        }
    }
    if m.advertises_exit_node() || m.exit_node_approved() {
        rows.push((
            "Exit node".into(),
            exit,
            m.advertises_exit_node(),
            m.exit_node_approved(),
        ));
    }
    let empty = rows.is_empty();
    let items = rows
        .into_iter()
        .map(|(label, routes, advertised, is_approved)| {
            let state = match (advertised, is_approved) {
                (true, true) => "approved",
                (true, false) => "awaiting approval",
                (false, _) => "approved, not advertised",
            };
            let action = if is_approved { "Unapprove" } else { "Approve" };
            let aria = format!("{action} {label}");
            let set = set.clone();
            view! {
                <li data-route=label.clone() data-state=state>
                    <code>{label.clone()}</code>
                    <span class="muted">{state}</span>
                    <button
                        type="button"
                        class="button button--secondary"
                        aria-label=aria
                        disabled=move || call.disabled()
                        on:click=move |_| set(routes.clone(), !is_approved)
                    >
                        {action}
                    </button>
                </li>
            }
        })
        .collect_view();
    let primary = (!detail.primary_routes.is_empty())
        .then(|| view! { <p>"Serving as primary for: " {detail.primary_routes.join(", ")}</p> });

    view! {
        <section class="card" aria-labelledby="machine-routes">
            <h2 id="machine-routes">"Routes"</h2>
            {if empty {
                view! { <p class="muted">"This machine advertises no routes and is not an exit node."</p> }.into_any()
            } else {
                view! { <ul class="routes">{items}</ul> }.into_any()
            }}
            {primary}
            {move || call.error.get().map(|message| view! { <ErrorNotice message /> })}
        </section>
    }
}
