//! Live updates: after hydration, the machine pages listen to the server's change stream
//! (`/console/events`, server-sent events) and refetch when it says machines changed.

use leptos::prelude::*;

/// A counter that moves whenever the server reports machine changes; read it in a
/// resource's source to refetch. Never moves during SSR or before hydration.
pub fn use_machine_events() -> ReadSignal<u64> {
    let (version, set_version) = signal(0_u64);
    imp::listen(set_version);
    version
}

#[cfg(feature = "hydrate")]
mod imp {
    use leptos::prelude::*;
    use wasm_bindgen::JsCast;
    use wasm_bindgen::closure::Closure;
    use web_sys::EventSource;

    use crate::dto::tailnet::{EVENTS_PATH, MACHINES_CHANGED_EVENT};

    pub fn listen(set_version: WriteSignal<u64>) {
        // Effects run only in the browser, once hydrated.
        Effect::new(move |_| {
            let Ok(source) = EventSource::new(EVENTS_PATH) else {
                return;
            };
            let on_change = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
                set_version.update(|v| *v += 1);
            });
            // Refetch on every open too: changes between the server render and the first
            // open, or while a dropped connection was reconnecting, would otherwise be missed.
            for event in [MACHINES_CHANGED_EVENT, "open"] {
                let _ = source
                    .add_event_listener_with_callback(event, on_change.as_ref().unchecked_ref());
            }
            let held = StoredValue::new_local(Some((source, on_change)));
            on_cleanup(move || {
                if let Some((source, _)) = held.try_update_value(|h| h.take()).flatten() {
                    source.close();
                }
            });
        });
    }
}

#[cfg(not(feature = "hydrate"))]
mod imp {
    use leptos::prelude::WriteSignal;

    pub fn listen(_set_version: WriteSignal<u64>) {}
}

/// False in the server-rendered HTML, true once hydration has attached the handlers: bind
/// `disabled` to its negation so no control looks usable before it works.
pub fn use_hydrated() -> ReadSignal<bool> {
    let (hydrated, set_hydrated) = signal(false);
    Effect::new(move |_| set_hydrated.set(true));
    hydrated
}
