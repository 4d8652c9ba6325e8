use leptos::prelude::*;
use leptos_meta::Title;

/// Shown for console paths that match no route; the server sets status 404.
#[component]
pub fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
        response.set_status(http::StatusCode::NOT_FOUND);
    }
    view! {
        <Title text="Page not found" />
        <h1>"Page not found"</h1>
        <p>
            "There is nothing at this address. " <a href="/machines">"Go to Machines"</a> "."
        </p>
    }
}
