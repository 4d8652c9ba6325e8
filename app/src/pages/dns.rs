//! DNS.

use leptos::prelude::*;

use crate::pages::placeholder::ComingSoon;

#[component]
pub fn DnsPage() -> impl IntoView {
    view! { <ComingSoon title="DNS" /> }
}
