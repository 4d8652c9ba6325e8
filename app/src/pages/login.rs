//! Sign in.

use leptos::prelude::*;

use crate::pages::placeholder::ComingSoon;

#[component]
pub fn LoginPage() -> impl IntoView {
    view! { <ComingSoon title="Sign in" /> }
}
