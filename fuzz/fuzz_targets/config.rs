//! The config file (`Config::from_yaml`, what `Config::load` does once the file is read):
//! YAML, headscale's renamed and removed keys, validation. An accepted config answers every
//! question the server asks of it, and the YAML `configtest` prints from it loads again.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use oxiscale::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/oxiscale/config.yaml");
    let Ok(config) = Config::from_yaml(text, Some(path), std::iter::empty()) else {
        return;
    };
    let _ = config.cli.base_url();
    let _ = config.server_host();
    let _ = config.server_port();
    let _ = config.trusted_proxy_nets();
    let _ = config.tls_source();
    let _ = config.sqlite_path();
    let _ = config.socket_path();
    let yaml = config.to_yaml();
    if let Err(err) = Config::from_yaml(&yaml, Some(path), std::iter::empty()) {
        panic!("configtest's output does not load again: {err}\n{yaml}");
    }
});
