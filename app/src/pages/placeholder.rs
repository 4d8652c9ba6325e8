use leptos::prelude::*;
use leptos_meta::Title;

/// A section that exists in the navigation but is not built yet.
#[component]
pub fn ComingSoon(title: &'static str) -> impl IntoView {
    view! {
        <Title text=title />
        <h1>{title}</h1>
        <section class="empty-state">
            <p>"This section is coming soon."</p>
        </section>
    }
}
