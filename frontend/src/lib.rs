//! Hydration entry: the browser half of the console, compiled to WASM by `scripts/build-site.sh`.

use wasm_bindgen::prelude::wasm_bindgen;

/// Called by the script `HydrationScripts` puts in the page once the WASM has loaded.
#[wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
