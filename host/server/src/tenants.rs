//! Tenants from a TOML file: API keys (stored as SHA-256 hashes) mapping to a tenant id, with a
//! maximum priority class, optional static limits and a cache-sharing group. Reloadable.
//!
//! ```toml
//! [[tenants]]
//! id = "acme"
//! api_keys = ["sha256:5e88489...", "sha256:..."]   # `mlahost hash-key KEY` prints one
//! max_priority = 10
//! max_concurrent_requests = 8        # optional
//! max_queued_tokens = 200000         # optional: prompt + max_tokens of requests in flight
//! cache_group = "shared"             # optional: tenants of one group share prefix pages
//! ```

use crate::api::error::ApiError;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: String,
    #[serde(default)]
    pub api_keys: Vec<String>,
    #[serde(default)]
    pub max_priority: i32,
    pub max_concurrent_requests: Option<usize>,
    pub max_queued_tokens: Option<usize>,
    pub cache_group: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantsFile {
    #[serde(default)]
    tenants: Vec<TenantConfig>,
}

/// The tenant a request belongs to.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub config: TenantConfig,
    /// A short, stable id of the API key used (never the key itself).
    pub key_id: Option<String>,
    /// Index for the scheduler's fair-share counters.
    pub index: u32,
}

impl Tenant {
    /// Everyone, when no tenants file is given.
    pub fn default_tenant() -> Self {
        Self {
            config: TenantConfig {
                id: "default".into(),
                api_keys: vec![],
                max_priority: i32::MAX,
                max_concurrent_requests: None,
                max_queued_tokens: None,
                cache_group: None,
            },
            key_id: None,
            index: 0,
        }
    }

    /// Prefix-cache salt: the cache group, else the tenant itself, plus the request's own salt,
    /// composed as a length-prefixed tuple so no tenant id or salt can imitate another pair.
    pub fn salt(&self, request_salt: Option<&str>) -> u64 {
        if self.index == 0 && self.config.id == "default" && request_salt.is_none() {
            return 0;
        }
        let (kind, owner) = match self.config.cache_group.as_deref() {
            Some(g) => ("group", g),
            None => ("tenant", self.config.id.as_str()),
        };
        match request_salt {
            Some(s) => mlahost_core::salt_of_parts(&[kind, owner, s]),
            None => mlahost_core::salt_of_parts(&[kind, owner]),
        }
    }
}

#[derive(Debug)]
pub struct Tenants {
    pub path: PathBuf,
    by_key: HashMap<String, usize>,
    list: Vec<TenantConfig>,
}

/// `sha256:<hex>` of an API key, as the tenants file stores it.
pub fn hash_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl Tenants {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let file: TenantsFile = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut by_key = HashMap::new();
        let mut ids = std::collections::HashSet::new();
        for (i, t) in file.tenants.iter().enumerate() {
            if t.id.is_empty() || !ids.insert(t.id.clone()) {
                return Err(format!("{}: tenants[{i}]: the id must be unique and non-empty", path.display()));
            }
            for k in &t.api_keys {
                let hex = k.strip_prefix("sha256:").filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()));
                if hex.is_none() {
                    return Err(format!("{}: tenant `{}`: api_keys must be \"sha256:<64 hex digits>\" (see `mlahost hash-key`)", path.display(), t.id));
                }
                if by_key.insert(k.to_ascii_lowercase(), i).is_some() {
                    return Err(format!("{}: tenant `{}`: a key hash is listed twice", path.display(), t.id));
                }
            }
        }
        Ok(Self { path: path.to_path_buf(), by_key, list: file.tenants })
    }

    /// The tenant of `Authorization: Bearer KEY`; 401 in the OpenAI shape otherwise.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Tenant, ApiError> {
        let unauthorized = |m: &str| ApiError { status: 401, message: m.into(), kind: "authentication_error", param: None, retry_after: None };
        let key = bearer(authorization).ok_or_else(|| unauthorized("missing API key: send `Authorization: Bearer <key>`"))?;
        let hash = hash_key(key);
        let &i = self.by_key.get(&hash).ok_or_else(|| unauthorized("invalid API key"))?;
        let config = self.list[i].clone();
        Ok(Tenant { index: tenant_index(&config.id), key_id: Some(hash[7..19].to_string()), config })
    }

    pub fn ids(&self) -> Vec<String> {
        self.list.iter().map(|t| t.id.clone()).collect()
    }
}

/// The key of `Authorization: Bearer KEY`.
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    authorization
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// A stable non-zero scheduler index for a tenant id (0 is the default tenant).
fn tenant_index(id: &str) -> u32 {
    (mlahost_core::salt_of(Some(id)) as u32) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hashed_and_resolve_to_their_tenant() {
        let dir = std::env::temp_dir().join(format!("mlahost-tenants-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.toml");
        let toml = format!(
            "[[tenants]]\nid = \"a\"\napi_keys = [\"{}\"]\nmax_priority = 3\n\n[[tenants]]\nid = \"b\"\napi_keys = [\"{}\"]\ncache_group = \"g\"\n",
            hash_key("key-a"),
            hash_key("key-b")
        );
        std::fs::write(&path, toml).unwrap();
        let t = Tenants::load(&path).unwrap();
        let a = t.authenticate(Some("Bearer key-a")).unwrap();
        assert_eq!((a.config.id.as_str(), a.config.max_priority), ("a", 3));
        assert!(!a.key_id.as_deref().unwrap().contains("key-a"));
        assert_eq!(t.authenticate(Some("Bearer key-b")).unwrap().config.id, "b");
        for bad in [None, Some("Bearer nope"), Some("Basic x"), Some("Bearer ")] {
            assert_eq!(t.authenticate(bad).unwrap_err().status, 401);
        }
        assert_ne!(a.salt(None), t.authenticate(Some("Bearer key-b")).unwrap().salt(None));
        // A tenant's request salt never lands on another tenant's pages.
        let mut slash = a.clone();
        slash.config.id = "a/dev".into();
        assert_ne!(a.salt(Some("dev")), slash.salt(None));
        std::fs::write(&path, "[[tenants]]\nid = \"a\"\napi_keys = [\"plaintext\"]\n").unwrap();
        assert!(Tenants::load(&path).unwrap_err().contains("sha256"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
