//! An admission policy that sleeps 2 s in `admit`: requests must neither wait for it nor
//! queue behind each other.

use mlahost_sdk::{Admission, RequestInfo, Verdict};

struct Sleepy;

impl Admission for Sleepy {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Sleepy)
    }

    fn admit(&mut self, request: &RequestInfo) -> Verdict {
        std::thread::sleep(std::time::Duration::from_secs(2));
        Verdict::Admit(request.priority)
    }
}

mlahost_sdk::export_admission!(Sleepy);
