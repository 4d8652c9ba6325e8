//! Users.

use leptos::prelude::*;

use crate::pages::placeholder::ComingSoon;

#[component]
pub fn UsersPage() -> impl IntoView {
    view! { <ComingSoon title="Users" /> }
}
