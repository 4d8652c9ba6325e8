//! A button that copies a command to the clipboard. It is disabled in the server-rendered HTML
//! and enabled by hydration, so it never looks usable while it cannot work.

use std::time::Duration;

use leptos::html::Code;
use leptos::prelude::*;

/// How long the button says "Copied" before it offers to copy again.
const FEEDBACK_DURATION: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CopyState {
    Idle,
    Copied,
    /// The clipboard API is unavailable (plain-HTTP origin) or refused; the text is selected
    /// instead so the operator can press Ctrl+C.
    Selected,
}

impl CopyState {
    fn button_text(self) -> &'static str {
        match self {
            CopyState::Idle => "Copy",
            CopyState::Copied => "Copied",
            CopyState::Selected => "Press Ctrl+C",
        }
    }

    fn announcement(self) -> &'static str {
        match self {
            CopyState::Idle => "",
            CopyState::Copied => "Copied to the clipboard.",
            CopyState::Selected => "Command selected; press Ctrl+C to copy it.",
        }
    }
}

/// Copies `text`; `target` is the element whose text is selected when the clipboard is not
/// available. `what` names the thing for screen readers ("join command" makes the button
/// read "Copy join command" while it shows "Copy").
#[component]
pub fn CopyButton(text: String, target: NodeRef<Code>, what: &'static str) -> impl IntoView {
    let state = RwSignal::new(CopyState::Idle);
    let hydrated = RwSignal::new(false);
    // Effects run only in the browser, after hydration has attached the click handler.
    Effect::new(move |_| hydrated.set(true));
    // Each click bumps this, so a reset scheduled by an older click cannot cut a newer one short.
    let generation = StoredValue::new(0_u64);

    let on_click = move |_| {
        let text = text.clone();
        generation.update_value(|g| *g += 1);
        let this_click = generation.get_value();
        leptos::task::spawn_local(async move {
            let outcome = if clipboard::write(&text).await.is_ok() {
                CopyState::Copied
            } else {
                clipboard::select_contents(target);
                CopyState::Selected
            };
            state.set(outcome);
            set_timeout(
                move || {
                    if generation.get_value() == this_click {
                        state.set(CopyState::Idle);
                    }
                },
                FEEDBACK_DURATION,
            );
        });
    };

    view! {
        <button
            type="button"
            class="button button--secondary copy-button"
            disabled=move || !hydrated.get()
            data-state=move || format!("{:?}", state.get()).to_lowercase()
            on:click=on_click
        >
            {move || state.get().button_text()}
            <span class="visually-hidden">" " {what}</span>
        </button>
        <span class="visually-hidden" role="status">
            {move || state.get().announcement()}
        </span>
    }
}

#[cfg(feature = "hydrate")]
mod clipboard {
    use leptos::html::Code;
    use leptos::prelude::*;
    use wasm_bindgen_futures::JsFuture;

    /// Writes through the async Clipboard API, which exists only in secure contexts.
    pub async fn write(text: &str) -> Result<(), ()> {
        let clipboard = window().navigator().clipboard();
        // Calling into an undefined `navigator.clipboard` would throw inside WASM.
        if clipboard.is_undefined() {
            return Err(());
        }
        JsFuture::from(clipboard.write_text(text))
            .await
            .map(|_| ())
            .map_err(|_| ())
    }

    pub fn select_contents(target: NodeRef<Code>) {
        let (Some(element), Ok(Some(selection))) =
            (target.get_untracked(), window().get_selection())
        else {
            return;
        };
        let _ = selection.select_all_children(&element);
    }
}

/// The server never runs click handlers; these keep the shared code compiling there.
#[cfg(not(feature = "hydrate"))]
mod clipboard {
    use leptos::html::Code;
    use leptos::prelude::NodeRef;

    pub async fn write(_text: &str) -> Result<(), ()> {
        Err(())
    }

    pub fn select_contents(_target: NodeRef<Code>) {}
}
