//! Machine.

use leptos::prelude::*;

use crate::pages::placeholder::ComingSoon;

#[component]
pub fn MachinePage() -> impl IntoView {
    view! { <ComingSoon title="Machine" /> }
}
