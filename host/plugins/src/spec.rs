//! How plugins are named on the command line or in a plugins file:
//! `PATH.wasm[:CONFIG_JSON_OR_@FILE]`, or JSON entries with limits and a failure policy.

use crate::PluginError;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// What happens to the call when a plugin traps, overruns its deadline or returns garbage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// The native default decides (the request is served as if the plugin were absent).
    Open,
    /// The request fails with a clear error.
    Closed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PluginSpec {
    /// Name used in requests (`"sampler": name`), metrics and logs: the file stem by default.
    pub name: String,
    pub path: PathBuf,
    /// Text passed to the plugin's `init`.
    pub config: String,
    pub failure_policy: FailurePolicy,
    /// Linear memory cap of one instance.
    pub memory_bytes: usize,
    /// Per-call deadline; None uses the hook's default budget.
    pub deadline: Option<Duration>,
    /// Instances serving calls at once; None uses the kind's default.
    pub instances: Option<usize>,
    /// A sampler that decides from the tokens alone (never reads the logits) and answers
    /// only allow-sets, pass or fail: the host may call it before the forward pass and apply
    /// its allow-sets on the device.
    pub masks_only: bool,
}

pub const DEFAULT_MEMORY_BYTES: usize = 64 << 20;
/// Most instances one plugin may keep serving.
pub const MAX_INSTANCES: usize = 16;

impl PluginSpec {
    /// `path.wasm`, `path.wasm:{"json": 1}` or `path.wasm:@config.json`.
    pub fn parse(spec: &str) -> Result<Self, PluginError> {
        let bad = |m: &str| PluginError::Spec { spec: spec.to_string(), message: m.to_string() };
        let (path, config) = match spec.find(".wasm:") {
            Some(i) => (&spec[..i + 5], Some(&spec[i + 6..])),
            None => (spec, None),
        };
        let config = match config {
            None => String::new(),
            Some(c) if c.starts_with('@') => std::fs::read_to_string(&c[1..]).map_err(|e| bad(&format!("config file {}: {e}", &c[1..])))?,
            Some(c) => c.to_string(),
        };
        Self::new(PathBuf::from(path), config).map_err(|m| bad(&m))
    }

    fn new(path: PathBuf, config: String) -> Result<Self, String> {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| "the plugin path has no file name".to_string())?
            .to_string();
        Ok(Self {
            name,
            path,
            config,
            failure_policy: FailurePolicy::Open,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            deadline: None,
            instances: None,
            masks_only: false,
        })
    }

    /// A plugins file: `{"plugins": [{"path": "...", "name": "...", "config": <any JSON or
    /// string>, "failure_policy": "open"|"closed", "memory_mb": 64, "deadline_ms": 20,
    /// "instances": 4, "masks_only": false}]}`.
    /// Relative paths are relative to the file.
    pub fn parse_file(file: &std::path::Path) -> Result<Vec<Self>, PluginError> {
        let spec = file.display().to_string();
        let bad = |m: String| PluginError::Spec { spec: spec.clone(), message: m };
        let text = std::fs::read_to_string(file).map_err(|e| bad(e.to_string()))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let list = v.get("plugins").and_then(Value::as_array).ok_or_else(|| bad("expected {\"plugins\": [...]}".into()))?;
        let base = file.parent().unwrap_or(std::path::Path::new("."));
        list.iter()
            .enumerate()
            .map(|(i, e)| {
                let at = |m: &str| bad(format!("plugins[{i}]: {m}"));
                let path = e.get("path").and_then(Value::as_str).ok_or_else(|| at("`path` is required"))?;
                let config = match e.get("config") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                };
                let mut s = Self::new(base.join(path), config).map_err(|m| at(&m))?;
                if let Some(n) = e.get("name") {
                    s.name = n.as_str().ok_or_else(|| at("`name` must be a string"))?.to_string();
                }
                s.failure_policy = match e.get("failure_policy").and_then(Value::as_str) {
                    None | Some("open") => FailurePolicy::Open,
                    Some("closed") => FailurePolicy::Closed,
                    Some(other) => return Err(at(&format!("failure_policy {other:?}: expected open or closed"))),
                };
                if let Some(m) = e.get("memory_mb") {
                    let mb = m.as_u64().filter(|&m| m > 0).ok_or_else(|| at("`memory_mb` must be a positive integer"))?;
                    s.memory_bytes = (mb as usize) << 20;
                }
                if let Some(d) = e.get("deadline_ms") {
                    let ms = d.as_u64().filter(|&m| m > 0).ok_or_else(|| at("`deadline_ms` must be a positive integer"))?;
                    s.deadline = Some(Duration::from_millis(ms));
                }
                if let Some(m) = e.get("masks_only") {
                    s.masks_only = m.as_bool().ok_or_else(|| at("`masks_only` must be true or false"))?;
                }
                if let Some(n) = e.get("instances") {
                    let n = n.as_u64().filter(|n| (1..=MAX_INSTANCES as u64).contains(n)).ok_or_else(|| at(&format!("`instances` must be in 1..={MAX_INSTANCES}")))?;
                    s.instances = Some(n as usize);
                }
                Ok(s)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_and_inline_configs() {
        let s = PluginSpec::parse("plugins/prefix_router.wasm").unwrap();
        assert_eq!((s.name.as_str(), s.config.as_str()), ("prefix_router", ""));
        let s = PluginSpec::parse(r#"x/tenant_quota.wasm:{"default": {"requests_per_min": 5}}"#).unwrap();
        assert_eq!(s.path, PathBuf::from("x/tenant_quota.wasm"));
        assert!(s.config.contains("requests_per_min"));
        assert!(PluginSpec::parse("p.wasm:@/no/such/file.json").is_err());
    }
}
