//! Access controls.

use leptos::prelude::*;

use crate::pages::placeholder::ComingSoon;

#[component]
pub fn AclsPage() -> impl IntoView {
    view! { <ComingSoon title="Access controls" /> }
}
