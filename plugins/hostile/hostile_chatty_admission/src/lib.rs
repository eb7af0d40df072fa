//! An admission policy that prints ~40 KB per call (under the 64 KiB an instance may buffer),
//! with lines forged to look like the server's own log (terminal codes, a fake "ready" line),
//! and rejects every request with a Retry-After of u32::MAX seconds. The host must bound and escape the output and clamp the
//! Retry-After.

use mlahost_sdk::{Admission, RequestInfo, Verdict};

struct Chatty;

impl Admission for Chatty {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Chatty)
    }

    fn admit(&mut self, _request: &RequestInfo) -> Verdict {
        let forged = "\x1b[2K\r2026-01-01T00:00:00Z  INFO mlahost: ready FORGED-LINE\n";
        for _ in 0..(40_000 / forged.len()) {
            print!("{forged}");
        }
        Verdict::too_many_requests("chatty says no", u32::MAX)
    }
}

mlahost_sdk::export_admission!(Chatty);
