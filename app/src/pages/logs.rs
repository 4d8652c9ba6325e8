//! Logs: the audit log of administrative changes, newest first, filtered by actor, action and
//! target. The filters are a plain GET form, so they live in the URL (shareable, and usable
//! before the WASM bundle loads).

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::api::audit::list_audit;
use crate::components::notice::{ErrorNotice, Loading};
use crate::dto::audit::{AUDIT_PAGE_ROWS, AuditQuery, AuditRow};
use crate::dto::tailnet::short_time;

#[component]
pub fn LogsPage() -> impl IntoView {
    let params = use_query_map();
    let query = move || {
        params.with(|q| AuditQuery {
            actor: q.get("actor").unwrap_or_default(),
            action: q.get("action").unwrap_or_default(),
            target: q.get("target").unwrap_or_default(),
        })
    };
    let entries = Resource::new(query, list_audit);

    view! {
        <Title text="Logs" />
        <h1>"Logs"</h1>
        <p class="audit__lead">
            "Every administrative change: who made it, how they signed in, and the thing before and after."
        </p>
        <form class="audit-filters" method="get" action="/logs" aria-label="Filter the log">
            <label>
                "Actor"
                <input name="actor" type="search" prop:value=move || query().actor />
            </label>
            <label>
                "Action"
                <input name="action" type="search" placeholder="node." prop:value=move || query().action />
            </label>
            <label>
                "Target"
                <input name="target" type="search" prop:value=move || query().target />
            </label>
            <button class="button" type="submit">
                "Filter"
            </button>
        </form>
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                match entries.await {
                    Ok(rows) if rows.is_empty() => {
                        view! { <p class="empty-state">"No changes match."</p> }.into_any()
                    }
                    Ok(rows) => {
                        let capped = rows.len() as u32 >= AUDIT_PAGE_ROWS;
                        let items = rows
                            .into_iter()
                            .map(|row| view! { <AuditItem row /> })
                            .collect_view();
                        view! {
                            {capped
                                .then(|| {
                                    view! {
                                        <p class="notice">
                                            {format!(
                                                "The newest {AUDIT_PAGE_ROWS} changes; narrow the filters or export everything with `oxiscale audit export`."
                                            )}
                                        </p>
                                    }
                                })}
                            <div class="table-wrap">
                                <table class="audit responsive">
                                    <thead>
                                        <tr>
                                            <th scope="col">"When"</th>
                                            <th scope="col">"Actor"</th>
                                            <th scope="col">"Action"</th>
                                            <th scope="col">"Target"</th>
                                            <th scope="col">"Change"</th>
                                        </tr>
                                    </thead>
                                    <tbody>{items}</tbody>
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
fn AuditItem(row: AuditRow) -> impl IntoView {
    let has_change = !(row.before.is_empty() && row.after.is_empty());
    let before = row.before.clone();
    let after = row.after.clone();
    view! {
        <tr data-audit=row.id.to_string()>
            <td data-label="When">
                <time datetime=row.at.clone() title=row.at.clone()>
                    {short_time(&row.at)}
                </time>
            </td>
            <td data-label="Actor">
                <span class="audit__actor">{row.actor.clone()}</span>
                " "
                <span class="badge">{actor_kind_label(&row.actor_kind)}</span>
            </td>
            <td data-label="Action">
                <code>{row.action.clone()}</code>
            </td>
            <td data-label="Target">{row.target.clone()}</td>
            <td data-label="Change">
                {has_change
                    .then(|| {
                        view! {
                            <details>
                                <summary>"Before and after"</summary>
                                <div class="audit__diff">
                                    <pre aria-label="Before">{before}</pre>
                                    <pre aria-label="After">{after}</pre>
                                </div>
                            </details>
                        }
                    })}
            </td>
        </tr>
    }
}

fn actor_kind_label(kind: &str) -> &'static str {
    match kind {
        "local_admin" => "local account",
        "sso" => "identity provider",
        "api_key" => "API key",
        "cli" => "CLI",
        _ => "server",
    }
}
