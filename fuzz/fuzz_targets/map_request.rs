//! `/machine/map` bodies as the server reads them: `serde_json` into `MapRequest`, then
//! `check_bounds`. What passes must be within every bound, and its Hostinfo (kept and sent
//! to peers) must serialize and read back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxiscale_tailcfg::MapRequest;
use oxiscale_tailcfg::bounds::{MAX_ENDPOINT_LEN, MAX_ENDPOINTS};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<MapRequest>(data) else {
        return;
    };
    let within = req.check_bounds().is_ok();
    if within {
        assert!(req.endpoints.len() <= MAX_ENDPOINTS);
        assert!(req.endpoints.iter().all(|e| e.len() <= MAX_ENDPOINT_LEN));
    }
    if let Some(hostinfo) = &req.hostinfo {
        oxiscale_fuzz::check_hostinfo(hostinfo, within);
    }
    let _ = req.is_lite_update();
});
