//! DNS: MagicDNS, base domain, nameservers (global and split), search domains and extra
//! records. One form, saved at once; the server validates it and pushes the result to every
//! connected machine.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::dns::{get_dns, set_dns};
use crate::components::live::use_hydrated;
use crate::components::notice::{ErrorNotice, Loading};
use crate::dto::dns::{DnsSettings, ExtraRecord, RECORD_TYPES, SplitDns};
use crate::dto::split_list;

#[component]
pub fn DnsPage() -> impl IntoView {
    let settings = Resource::new(|| (), |_| get_dns());

    view! {
        <Title text="DNS" />
        <h1>"DNS"</h1>
        <Suspense fallback=Loading>
            {move || Suspend::new(async move {
                match settings.await {
                    Ok(initial) => view! { <DnsForm initial /> }.into_any(),
                    Err(error) => view! { <ErrorNotice message=error.to_string() /> }.into_any()
                }
            })}
        </Suspense>
    }
}

/// One split DNS entry being edited.
#[derive(Clone)]
struct SplitRow {
    id: usize,
    domain: RwSignal<String>,
    nameservers: RwSignal<String>,
}

/// One extra record being edited.
#[derive(Clone)]
struct RecordRow {
    id: usize,
    name: RwSignal<String>,
    record_type: RwSignal<String>,
    value: RwSignal<String>,
}

/// Everything the form edits, as signals.
#[derive(Clone, Copy)]
struct Fields {
    magic_dns: RwSignal<bool>,
    base_domain: RwSignal<String>,
    override_local_dns: RwSignal<bool>,
    nameservers: RwSignal<String>,
    search_domains: RwSignal<String>,
    split: RwSignal<Vec<SplitRow>>,
    records: RwSignal<Vec<RecordRow>>,
    next_id: StoredValue<usize>,
}

impl Fields {
    fn new(s: &DnsSettings) -> Fields {
        let f = Fields {
            magic_dns: RwSignal::new(s.magic_dns),
            base_domain: RwSignal::new(s.base_domain.clone()),
            override_local_dns: RwSignal::new(s.override_local_dns),
            nameservers: RwSignal::new(s.nameservers.join("\n")),
            search_domains: RwSignal::new(s.search_domains.join("\n")),
            split: RwSignal::new(Vec::new()),
            records: RwSignal::new(Vec::new()),
            next_id: StoredValue::new(0),
        };
        f.load_rows(s);
        f
    }

    fn id(&self) -> usize {
        let id = self.next_id.get_value();
        self.next_id.set_value(id + 1);
        id
    }

    fn split_row(&self, entry: &SplitDns) -> SplitRow {
        SplitRow {
            id: self.id(),
            domain: RwSignal::new(entry.domain.clone()),
            nameservers: RwSignal::new(entry.nameservers.join(", ")),
        }
    }

    fn record_row(&self, record: &ExtraRecord) -> RecordRow {
        RecordRow {
            id: self.id(),
            name: RwSignal::new(record.name.clone()),
            record_type: RwSignal::new(if record.record_type.is_empty() {
                "A".into()
            } else {
                record.record_type.clone()
            }),
            value: RwSignal::new(record.value.clone()),
        }
    }

    fn load_rows(&self, s: &DnsSettings) {
        let split = s.split_dns.iter().map(|e| self.split_row(e)).collect();
        let records = s.extra_records.iter().map(|r| self.record_row(r)).collect();
        self.split.set(split);
        self.records.set(records);
    }

    /// Shows what the server saved (its canonical form).
    fn load(&self, s: &DnsSettings) {
        self.magic_dns.set(s.magic_dns);
        self.base_domain.set(s.base_domain.clone());
        self.override_local_dns.set(s.override_local_dns);
        self.nameservers.set(s.nameservers.join("\n"));
        self.search_domains.set(s.search_domains.join("\n"));
        self.load_rows(s);
    }

    fn collect(&self) -> DnsSettings {
        DnsSettings {
            magic_dns: self.magic_dns.get_untracked(),
            base_domain: self.base_domain.get_untracked(),
            override_local_dns: self.override_local_dns.get_untracked(),
            nameservers: split_list(&self.nameservers.get_untracked()),
            split_dns: self
                .split
                .get_untracked()
                .iter()
                // A row left completely empty is not an entry.
                .filter(|r| {
                    !r.domain.get_untracked().trim().is_empty()
                        || !r.nameservers.get_untracked().trim().is_empty()
                })
                .map(|r| SplitDns {
                    domain: r.domain.get_untracked(),
                    nameservers: split_list(&r.nameservers.get_untracked()),
                })
                .collect(),
            search_domains: split_list(&self.search_domains.get_untracked()),
            extra_records: self
                .records
                .get_untracked()
                .iter()
                .filter(|r| {
                    !r.name.get_untracked().trim().is_empty()
                        || !r.value.get_untracked().trim().is_empty()
                })
                .map(|r| ExtraRecord {
                    name: r.name.get_untracked(),
                    record_type: r.record_type.get_untracked(),
                    value: r.value.get_untracked(),
                })
                .collect(),
        }
    }
}

#[component]
fn DnsForm(initial: DnsSettings) -> impl IntoView {
    let fields = Fields::new(&initial);
    let save = Action::new(move |settings: &DnsSettings| {
        let settings = settings.clone();
        async move { set_dns(settings).await }
    });
    Effect::new(move |_| {
        if let Some(Ok(saved)) = save.value().get() {
            fields.load(&saved);
        }
    });
    // False until hydrated: marks the form as live (tests wait for it).
    let ready = use_hydrated();
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        save.dispatch(fields.collect());
    };
    let add_split = move |_| {
        let row = fields.split_row(&SplitDns::default());
        fields.split.update(|rows| rows.push(row));
    };
    let add_record = move |_| {
        let row = fields.record_row(&ExtraRecord::default());
        fields.records.update(|rows| rows.push(row));
    };

    view! {
        <form class="dns-form" data-ready=move || ready.get().to_string() on:submit=on_submit>
            {view! { <section class="card dns-section" aria-labelledby="dns-magic-heading">
                <h2 id="dns-magic-heading">"MagicDNS"</h2>
                <p class="hint">
                    "Machines get names like " <code>"laptop."{initial.base_domain.clone()}</code>
                    " and reach each other by name."
                </p>
                <div class="field field--check">
                    <input id="dns-magic" type="checkbox" bind:checked=fields.magic_dns />
                    <label for="dns-magic">"Enable MagicDNS"</label>
                </div>
                <div class="field">
                    <label for="dns-base-domain">"Base domain"</label>
                    <input
                        id="dns-base-domain"
                        type="text"
                        autocomplete="off"
                        spellcheck="false"
                        bind:value=fields.base_domain
                    />
                </div>
            </section> }.into_any()}

            {view! { <section class="card dns-section" aria-labelledby="dns-ns-heading">
                <h2 id="dns-ns-heading">"Nameservers"</h2>
                <div class="field">
                    <label for="dns-nameservers">"Global nameservers"</label>
                    <p class="hint" id="dns-nameservers-hint">
                        "IP addresses or https:// (DNS over HTTPS) URLs, one per line."
                    </p>
                    <textarea
                        id="dns-nameservers"
                        rows="3"
                        spellcheck="false"
                        aria-describedby="dns-nameservers-hint"
                        prop:value=move || fields.nameservers.get()
                        on:input=move |ev| fields.nameservers.set(event_target_value(&ev))
                    >
                        {initial.nameservers.join("\n")}
                    </textarea>
                </div>
                <div class="field field--check">
                    <input
                        id="dns-override"
                        type="checkbox"
                        bind:checked=fields.override_local_dns
                    />
                    <label for="dns-override">
                        "Override local DNS (machines use only these nameservers)"
                    </label>
                </div>

                <h3 id="dns-split-heading">"Split DNS"</h3>
                <p class="hint">"Queries under a domain go to its own nameservers."</p>
                <ul class="dns-rows" aria-labelledby="dns-split-heading">
                    <For
                        each=move || fields.split.get()
                        key=|row| row.id
                        children=move |row| {
                            let id = row.id;
                            view! {
                                <li class="dns-row">
                                    <TextField id=format!("dns-split-domain-{id}") label="Domain" value=row.domain />
                                    <TextField id=format!("dns-split-servers-{id}") label="Nameservers" value=row.nameservers />
                                    <button
                                        type="button"
                                        class="button button--secondary"
                                        aria-label=move || {
                                            format!("Remove split DNS {}", row.domain.get())
                                        }
                                        on:click=move |_| {
                                            fields.split.update(|rows| rows.retain(|r| r.id != id))
                                        }
                                    >
                                        "Remove"
                                    </button>
                                </li>
                            }
                            .into_any()
                        }
                    />
                </ul>
                <button type="button" class="button button--secondary" on:click=add_split>
                    "Add split DNS domain"
                </button>
            </section> }.into_any()}

            {view! { <section class="card dns-section" aria-labelledby="dns-search-heading">
                <h2 id="dns-search-heading">"Search domains"</h2>
                <div class="field">
                    <label for="dns-search-domains">"Search domains"</label>
                    <p class="hint" id="dns-search-hint">
                        "Short names are tried under these domains, one per line."
                    </p>
                    <textarea
                        id="dns-search-domains"
                        rows="3"
                        spellcheck="false"
                        aria-describedby="dns-search-hint"
                        prop:value=move || fields.search_domains.get()
                        on:input=move |ev| fields.search_domains.set(event_target_value(&ev))
                    >
                        {initial.search_domains.join("\n")}
                    </textarea>
                </div>
            </section> }.into_any()}

            {view! { <section class="card dns-section" aria-labelledby="dns-records-heading">
                <h2 id="dns-records-heading">"Extra records"</h2>
                <p class="hint">"Names every machine resolves, e.g. services outside the tailnet."</p>
                <ul class="dns-rows" aria-labelledby="dns-records-heading">
                    <For
                        each=move || fields.records.get()
                        key=|row| row.id
                        children=move |row| {
                            let id = row.id;
                            let type_id = format!("dns-record-type-{id}");
                            view! {
                                <li class="dns-row dns-row--record">
                                    <TextField id=format!("dns-record-name-{id}") label="Name" value=row.name />
                                    <div class="field">
                                        <label for=type_id.clone()>"Type"</label>
                                        <select
                                            id=type_id
                                            on:change=move |ev| {
                                                row.record_type.set(event_target_value(&ev))
                                            }
                                        >
                                            {RECORD_TYPES
                                                .iter()
                                                .map(|t| {
                                                    view! {
                                                        <option
                                                            value=*t
                                                            selected=move || row.record_type.get() == *t
                                                        >
                                                            {*t}
                                                        </option>
                                                    }
                                                })
                                                .collect_view()}
                                        </select>
                                    </div>
                                    <TextField id=format!("dns-record-value-{id}") label="Address" value=row.value />
                                    <button
                                        type="button"
                                        class="button button--secondary"
                                        aria-label=move || format!("Remove record {}", row.name.get())
                                        on:click=move |_| {
                                            fields.records.update(|rows| rows.retain(|r| r.id != id))
                                        }
                                    >
                                        "Remove"
                                    </button>
                                </li>
                            }
                            .into_any()
                        }
                    />
                </ul>
                <button type="button" class="button button--secondary" on:click=add_record>
                    "Add record"
                </button>
            </section> }.into_any()}

            <div class="dns-actions">
                <button type="submit" class="button" disabled=move || save.pending().get()>
                    {move || if save.pending().get() { "Saving…" } else { "Save DNS settings" }}
                </button>
                <div class="dns-status" aria-live="polite">
                    {move || match save.value().get() {
                        Some(Ok(_)) => {
                            view! {
                                <p class="notice notice--ok" role="status">
                                    "Saved. Connected machines got the new settings."
                                </p>
                            }
                                .into_any()
                        }
                        Some(Err(e)) => {
                            view! {
                                <p class="notice notice--error" role="alert">
                                    "Not saved: "
                                    {e.to_string()}
                                </p>
                            }
                                .into_any()
                        }
                        None => ().into_any(),
                    }}
                </div>
            </div>
        </form>
    }
}

/// A labelled one-line text input bound to `value` (the rows of split DNS and records).
#[component]
fn TextField(id: String, label: &'static str, value: RwSignal<String>) -> impl IntoView {
    view! {
        <div class="field">
            <label for=id.clone()>{label}</label>
            <input id=id type="text" spellcheck="false" bind:value=value />
        </div>
    }
}
