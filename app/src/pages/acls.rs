//! Access controls: the HuJSON policy, validated as it is typed (by the server's own parser,
//! compiled to WASM), a line diff before saving, saving through the server (which also
//! compiles it against the tailnet and runs its tests), and a preview of one user's or
//! machine's access.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::policy::{get_policy, preview_policy, preview_subjects, save_policy};
use crate::components::live::use_hydrated;
use crate::components::notice::{ErrorNotice, Loading};
use crate::dto::policy::{DiffTag, PolicyDoc, PolicyIssue, SaveOutcome, line_diff, validate};

#[component]
pub fn AclsPage() -> impl IntoView {
    let doc = Resource::new(|| (), |_| get_policy());
    view! {
        <Title text="Access controls" />
        <h1>"Access controls"</h1>
        <Suspense fallback=Loading>
            {move || Suspend::new(async move {
                match doc.await {
                    Ok(doc) => view! { <PolicyEditor doc /> }.into_any(),
                    Err(error) => view! { <ErrorNotice message=error.to_string() /> }.into_any()
                }
            })}
        </Suspense>
    }
}

#[component]
fn PolicyEditor(doc: PolicyDoc) -> impl IntoView {
    let editable = doc.editable;
    let text = RwSignal::new(doc.text.clone());
    let saved = RwSignal::new(doc.text.clone());
    let reviewing = RwSignal::new(false);
    let issue = Memo::new(move |_| text.with(|t| validate(t).err()));
    // A refusal by the server (compile or tests) for the text it was given.
    let server_issue = RwSignal::new(None::<(String, PolicyIssue)>);
    let shown_issue = Memo::new(move |_| {
        issue.get().or_else(|| {
            server_issue
                .get()
                .filter(|(t, _)| text.with(|cur| cur == t))
                .map(|(_, i)| i)
        })
    });
    let changed = Memo::new(move |_| text.with(|t| saved.with(|s| t != s)));
    // False until hydrated: marks the form as live (tests wait for it).
    let ready = use_hydrated();
    let textarea = NodeRef::<leptos::html::Textarea>::new();
    let gutter = NodeRef::<leptos::html::Div>::new();

    let save = Action::new(move |t: &String| {
        let t = t.clone();
        async move { (t.clone(), save_policy(t).await) }
    });
    let result = RwSignal::new(None::<Result<String, String>>);
    Effect::new(move |_| {
        if let Some((sent, outcome)) = save.value().get() {
            match outcome {
                Ok(SaveOutcome::Saved(doc)) => {
                    saved.set(doc.text.clone());
                    text.set(doc.text);
                    reviewing.set(false);
                    result.set(Some(Ok("Saved: the new policy is in force.".into())));
                }
                Ok(SaveOutcome::Refused(i)) => {
                    result.set(Some(Err(format!("Not saved: {i}"))));
                    server_issue.set(Some((sent, i)));
                    reviewing.set(false);
                }
                Err(e) => result.set(Some(Err(format!("Not saved: {e}")))),
            }
        }
    });

    let go_to_line = move |line: u32| {
        #[cfg(feature = "hydrate")]
        if let Some(el) = textarea.get() {
            let t = text.get_untracked();
            let start: usize = t
                .split('\n')
                .take(line.saturating_sub(1) as usize)
                .map(|l| l.chars().count() + 1)
                .sum();
            let len = t
                .split('\n')
                .nth(line.saturating_sub(1) as usize)
                .map_or(0, |l| l.chars().count());
            let _ = el.focus();
            let _ = el.set_selection_range(start as u32, (start + len) as u32);
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = line;
    };
    let sync_scroll = move |_| {
        if let (Some(t), Some(g)) = (textarea.get(), gutter.get()) {
            g.set_scroll_top(t.scroll_top());
        }
    };

    let subjects = Resource::new(|| (), |_| preview_subjects());
    let subject = RwSignal::new(String::new());
    let preview = Action::new(move |(t, s): &(String, String)| {
        let (t, s) = (t.clone(), s.clone());
        async move { preview_policy(t, s).await }
    });

    let editor = view! {
        <section class="acl-editor-section" aria-labelledby="acl-editor-heading">
            <h2 id="acl-editor-heading" class="visually-hidden">"Policy"</h2>
            {(!editable)
                .then(|| {
                    view! {
                        <p class="notice acl-readonly" role="note">
                            "This server reads its policy from a file ("
                            <code>{doc.file.clone().unwrap_or_default()}</code>
                            "). It is shown read-only here: edit that file; the server reloads it when it changes (or on SIGHUP). To edit here, run with policy.mode: database."
                        </p>
                    }
                })}
            {doc
                .problem
                .clone()
                .map(|p| {
                    view! {
                        <p class="notice notice--error" role="alert">
                            "The policy in force no longer compiles: "
                            {p}
                        </p>
                    }
                })}
            <label for="policy-editor">"Policy (HuJSON)"</label>
            <div class="acl-editor">
                <div class="acl-gutter" aria-hidden="true" node_ref=gutter>
                    {move || {
                        let bad = shown_issue.get().and_then(|i| i.line);
                        let lines = text.with(|t| t.split('\n').count());
                        (1..=lines)
                            .map(|n| {
                                let is_bad = bad == Some(n as u32);
                                view! {
                                    <span class="acl-line" class:acl-line--error=is_bad>
                                        {n}
                                    </span>
                                }
                            })
                            .collect_view()
                    }}
                </div>
                <textarea
                    id="policy-editor"
                    class="acl-text"
                    node_ref=textarea
                    spellcheck="false"
                    autocomplete="off"
                    wrap="off"
                    rows="24"
                    readonly=!editable
                    aria-describedby="policy-status"
                    aria-invalid=move || shown_issue.with(|i| i.is_some()).to_string()
                    prop:value=move || text.get()
                    on:input=move |ev| {
                        text.set(event_target_value(&ev));
                        reviewing.set(false);
                    }
                    on:scroll=sync_scroll
                >
                    {doc.text.clone()}
                </textarea>
            </div>
            <div id="policy-status" class="acl-status">
                {move || match shown_issue.get() {
                    Some(i) => {
                        let line = i.line;
                        view! {
                            <p class="notice notice--error acl-issue" role="alert">
                                {i.to_string()}
                                {line
                                    .map(|l| {
                                        view! {
                                            " "
                                            <button
                                                type="button"
                                                class="button button--secondary"
                                                on:click=move |_| go_to_line(l)
                                            >
                                                {format!("Go to line {l}")}
                                            </button>
                                        }
                                    })}
                            </p>
                        }
                            .into_any()
                    }
                    None => {
                        view! { <p class="acl-ok">"The policy parses and passes its checks."</p> }
                            .into_any()
                    }
                }}
            </div>
        </section>
    }
    .into_any();

    let actions = view! {
        <div class="acl-actions" data-ready=move || ready.get().to_string()>
            {editable
                .then(|| {
                    view! {
                        <button
                            type="button"
                            class="button"
                            disabled=move || {
                                !changed.get() || shown_issue.with(|i| i.is_some())
                            }
                            on:click=move |_| {
                                result.set(None);
                                reviewing.set(true);
                            }
                        >
                            "Review changes"
                        </button>
                        <button
                            type="button"
                            class="button button--secondary"
                            disabled=move || !changed.get()
                            on:click=move |_| {
                                text.set(saved.get_untracked());
                                reviewing.set(false);
                            }
                        >
                            "Discard changes"
                        </button>
                    }
                })}
            <div class="acl-result" aria-live="polite">
                {move || match result.get() {
                    Some(Ok(m)) => view! { <p class="notice" role="status">{m}</p> }.into_any(),
                    Some(Err(m)) => view! { <ErrorNotice message=m /> }.into_any(),
                    None => ().into_any(),
                }}
            </div>
        </div>
    }
    .into_any();

    let review = move || {
        reviewing
            .get()
            .then(|| {
                let diff = line_diff(&saved.get_untracked(), &text.get_untracked());
                view! {
                    <section class="acl-diff-section" aria-labelledby="acl-diff-heading">
                        <h2 id="acl-diff-heading">"Changes to save"</h2>
                        <div class="acl-diff" role="table" aria-label="Line diff">
                            {diff
                                .into_iter()
                                .filter(|l| l.tag != DiffTag::Same)
                                .map(|l| {
                                    let (class, sign, n) = match l.tag {
                                        DiffTag::Added => ("acl-diff__line acl-diff__line--added", "+", l.new),
                                        DiffTag::Removed => ("acl-diff__line acl-diff__line--removed", "-", l.old),
                                        DiffTag::Same => ("acl-diff__line", " ", l.new),
                                    };
                                    view! {
                                        <div class=class role="row">
                                            <span role="cell" class="acl-diff__no">
                                                {n.map(|n| n.to_string()).unwrap_or_default()}
                                            </span>
                                            <span role="cell" class="acl-diff__sign">{sign}</span>
                                            <code role="cell">{l.text}</code>
                                        </div>
                                    }
                                })
                                .collect_view()}
                        </div>
                        <div class="acl-actions">
                            <button
                                type="button"
                                class="button"
                                disabled=move || save.pending().get()
                                on:click=move |_| {
                                    save.dispatch(text.get_untracked());
                                }
                            >
                                "Save policy"
                            </button>
                            <button
                                type="button"
                                class="button button--secondary"
                                on:click=move |_| reviewing.set(false)
                            >
                                "Back to editing"
                            </button>
                        </div>
                    </section>
                }
            })
    };

    let preview_view = view! {
        <section class="acl-preview" aria-labelledby="acl-preview-heading">
            <h2 id="acl-preview-heading">"Preview rules"</h2>
            <p class="hint">
                "What a user's machines, or one machine, could reach under the policy in the editor (saved or not)."
            </p>
            <div class="acl-preview__controls">
                <label for="acl-subject">"User or machine"</label>
                <select
                    id="acl-subject"
                    on:change=move |ev| subject.set(event_target_value(&ev))
                >
                    <option value="">"Choose…"</option>
                    <Suspense>
                        {move || Suspend::new(async move {
                            subjects
                                .await
                                .unwrap_or_default()
                                .into_iter()
                                .map(|s| view! { <option value=s.key>{s.label}</option> })
                                .collect_view()
                        })}
                    </Suspense>
                </select>
                <button
                    type="button"
                    class="button button--secondary"
                    disabled=move || subject.with(|s| s.is_empty())
                    on:click=move |_| {
                        preview.dispatch((text.get_untracked(), subject.get_untracked()));
                    }
                >
                    "Preview"
                </button>
            </div>
            {move || {
                preview
                    .value()
                    .get()
                    .map(|r| match r {
                        Err(e) => view! { <ErrorNotice message=e.to_string() /> }.into_any(),
                        Ok(p) => {
                            view! {
                                {p.note.map(|n| view! { <p class="acl-preview__note">{n}</p> })}
                                <div class="table-wrap">
                                    <table class="acl-preview__table">
                                        <thead>
                                            <tr>
                                                <th scope="col">"Destination"</th>
                                                <th scope="col">"Access"</th>
                                                <th scope="col">"Allowed by"</th>
                                            </tr>
                                        </thead>
                                        <tbody>
                                            {p
                                                .rows
                                                .into_iter()
                                                .map(|row| {
                                                    view! {
                                                        <tr>
                                                            <td>{row.destination}</td>
                                                            <td>
                                                                <code>{row.ports.join(" ")}</code>
                                                                {(!row.capabilities.is_empty())
                                                                    .then(|| {
                                                                        view! {
                                                                            <div class="acl-preview__caps">
                                                                                "Capabilities: "
                                                                                <code>{row.capabilities.join(" ")}</code>
                                                                            </div>
                                                                        }
                                                                    })}
                                                                {(!row.routes.is_empty())
                                                                    .then(|| {
                                                                        view! {
                                                                            <div class="acl-preview__routes">
                                                                                "Routes through it: "
                                                                                <code>{row.routes.join(" ")}</code>
                                                                            </div>
                                                                        }
                                                                    })}
                                                            </td>
                                                            <td>
                                                                {row
                                                                    .rules
                                                                    .into_iter()
                                                                    .map(|r| view! { <div><code>{r}</code></div> })
                                                                    .collect_view()}
                                                            </td>
                                                        </tr>
                                                    }
                                                })
                                                .collect_view()}
                                        </tbody>
                                    </table>
                                </div>
                            }
                                .into_any()
                        }
                    })
            }}
        </section>
    }
    .into_any();

    view! {
        <div class="acl-page">
            {editor}
            {actions}
            {review}
            {preview_view}
        </div>
    }
}
