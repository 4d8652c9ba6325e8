//! `/machine/register` bodies as the server reads them: `serde_json` into
//! `RegisterRequest`, then `check_bounds`. A Hostinfo that passes is stored and sent to
//! peers, so it must serialize within the bound and read back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxiscale_tailcfg::RegisterRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<RegisterRequest>(data) else {
        return;
    };
    let within = req.check_bounds().is_ok();
    if let Some(hostinfo) = &req.hostinfo {
        oxiscale_fuzz::check_hostinfo(hostinfo, within);
    }
    let _ = req.expiry.map(|t| t.unix_timestamp());
});
