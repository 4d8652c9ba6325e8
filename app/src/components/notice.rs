//! The notices every page shows the same way: an error, announced to screen readers, and the
//! placeholder while a page's data loads.

use leptos::prelude::*;

/// An error for the administrator (`role="alert"`, so assistive technology reads it out).
#[component]
pub fn ErrorNotice(#[prop(into)] message: String) -> impl IntoView {
    view! { <p class="notice notice--error" role="alert">{message}</p> }
}

/// The fallback of a page's `Suspense`/`Transition` while its data loads.
#[component]
pub fn Loading() -> impl IntoView {
    view! { <p class="loading">"Loading…"</p> }
}
