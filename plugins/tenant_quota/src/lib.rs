//! `tenant_quota`: per-tenant requests per minute, tokens per minute, concurrent requests and
//! priority classes, as an admission plugin. See README.md for the config and how to see it work.

mod config;
mod quota;

pub use config::{Config, Limits};
use mlahost_sdk::{Admission, RequestInfo, Usage, Verdict};
pub use quota::Quotas;

/// The plugin: the quotas and their sliding windows.
pub struct TenantQuota {
    quotas: Quotas,
}

impl Admission for TenantQuota {
    fn init(config: &str) -> Result<Self, String> {
        Ok(TenantQuota {
            quotas: Quotas::new(Config::parse(config)?),
        })
    }

    fn admit(&mut self, request: &RequestInfo) -> Verdict {
        self.quotas.admit(request)
    }

    fn completed(&mut self, usage: &Usage) {
        self.quotas.completed(usage)
    }
}

mlahost_sdk::export_admission!(TenantQuota);
