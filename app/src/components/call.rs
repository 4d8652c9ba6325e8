//! One change sent to the server from a form or button: pending while it runs, the server's
//! refusal kept to show, and disabled controls until hydration has made them work.

use std::future::Future;

use leptos::prelude::*;

use crate::components::live::use_hydrated;
use crate::dto::ConsoleError;

#[derive(Clone, Copy)]
pub struct ServerCall {
    pub hydrated: ReadSignal<bool>,
    pub pending: RwSignal<bool>,
    /// The last call's error, shown until the next call starts.
    pub error: RwSignal<Option<String>>,
}

pub fn use_server_call() -> ServerCall {
    ServerCall {
        hydrated: use_hydrated(),
        pending: RwSignal::new(false),
        error: RwSignal::new(None),
    }
}

impl ServerCall {
    /// Bind `disabled` to this: not usable before hydration, nor while a call runs.
    pub fn disabled(self) -> bool {
        !self.hydrated.get() || self.pending.get()
    }

    /// Runs `call` in the browser; `on_ok` gets its answer, an error is kept in `error`.
    pub fn run<T: 'static>(
        self,
        call: impl Future<Output = Result<T, ConsoleError>> + 'static,
        on_ok: impl FnOnce(T) + 'static,
    ) {
        self.pending.set(true);
        self.error.set(None);
        leptos::task::spawn_local(async move {
            match call.await {
                Ok(answer) => on_ok(answer),
                Err(e) => self.error.set(Some(e.to_string())),
            }
            self.pending.set(false);
        });
    }
}
