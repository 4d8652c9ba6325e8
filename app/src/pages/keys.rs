//! Keys.

use leptos::prelude::*;

use crate::pages::placeholder::ComingSoon;

#[component]
pub fn KeysPage() -> impl IntoView {
    view! { <ComingSoon title="Keys" /> }
}
