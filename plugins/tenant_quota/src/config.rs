//! The plugin's config.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One tenant's limits; a field left out is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Admitted requests in any 60 s window.
    pub requests_per_min: Option<u32>,
    /// Tokens in any 60 s window: `prompt + max_tokens` reserved at admission, replaced by
    /// `prompt + completion` when the request completes.
    pub tokens_per_min: Option<u64>,
    /// Requests admitted and not yet completed.
    pub max_concurrent: Option<u32>,
    /// The priority class to admit at (the request's own priority when left out).
    pub priority: Option<i32>,
}

/// `{"tenants": {"<name>": {limits}}, "default": {limits}}`: `default` applies to every tenant
/// not listed (each such tenant has its own counters).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Limits by tenant name.
    pub tenants: BTreeMap<String, Limits>,
    /// Limits of tenants not in `tenants`.
    pub default: Limits,
}

impl Config {
    /// Parses the plugin's config text (`""` means no limits at all).
    pub fn parse(text: &str) -> Result<Config, String> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_json::from_str(text).map_err(|e| format!("tenant_quota config: {e}"))
    }

    /// The limits that apply to `tenant`.
    pub fn limits(&self, tenant: &str) -> &Limits {
        self.tenants.get(tenant).unwrap_or(&self.default)
    }
}
