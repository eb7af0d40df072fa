//! The eviction rule, in plain Rust (tested natively).

use mlahost_sdk::{Candidate, EvictionPlan};
use serde::Deserialize;

/// `{"min_hits": 2}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// A page reused by at least this many requests is pinned.
    pub min_hits: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config { min_hits: 2 }
    }
}

impl Config {
    /// Parses the plugin's config text (`""` means the defaults).
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(text).map_err(|e| format!("pin_shared_prefixes config: {e}"))?
        };
        if config.min_hits == 0 {
            return Err(
                "pin_shared_prefixes config: min_hits must be at least 1 (0 would pin every page)"
                    .into(),
            );
        }
        Ok(config)
    }
}

/// Pins the candidates with `hits >= min_hits`; orders the others for eviction least recently
/// used first, deeper pages first among equal last use (a chain's tail goes before its head),
/// then by page id.
pub fn plan(config: &Config, candidates: &[Candidate]) -> EvictionPlan {
    let (pinned, mut evictable): (Vec<&Candidate>, Vec<&Candidate>) =
        candidates.iter().partition(|c| c.hits >= config.min_hits);
    evictable.sort_by_key(|c| (c.last_use, std::cmp::Reverse(c.depth), c.page));
    EvictionPlan {
        evict_order: evictable.iter().map(|c| c.page).collect(),
        pin: pinned.iter().map(|c| c.page).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(page: u32, last_use: u64, hits: u32, depth: u32) -> Candidate {
        Candidate {
            page,
            last_use,
            hits,
            depth,
            pages: 1,
            ..Default::default()
        }
    }

    #[test]
    fn pins_shared_pages_and_orders_the_rest_lru() {
        let cands = [
            c(1, 50, 0, 0),
            c(2, 10, 5, 0),
            c(3, 20, 1, 0),
            c(4, 5, 2, 1),
            c(5, 30, 0, 0),
        ];
        let p = plan(&Config::default(), &cands);
        assert_eq!(p.pin, vec![2, 4]);
        assert_eq!(p.evict_order, vec![3, 5, 1]);
    }

    #[test]
    fn deeper_first_among_equal_last_use() {
        let cands = [
            c(7, 10, 0, 0),
            c(8, 10, 0, 2),
            c(9, 10, 0, 1),
            c(6, 10, 0, 1),
        ];
        let p = plan(&Config::default(), &cands);
        assert_eq!(p.evict_order, vec![8, 6, 9, 7]);
        assert!(p.pin.is_empty());
    }

    #[test]
    fn min_hits_from_config() {
        let cfg = Config::parse(r#"{"min_hits": 5}"#).unwrap();
        let p = plan(&cfg, &[c(1, 1, 4, 0), c(2, 2, 5, 0)]);
        assert_eq!((p.evict_order, p.pin), (vec![1], vec![2]));
    }

    #[test]
    fn config_parsing() {
        assert_eq!(Config::parse(" ").unwrap(), Config { min_hits: 2 });
        assert!(Config::parse(r#"{"min_hits": 0}"#).is_err());
        assert!(Config::parse(r#"{"minhits": 3}"#)
            .unwrap_err()
            .contains("unknown field"));
    }

    #[test]
    fn empty_candidates() {
        assert_eq!(plan(&Config::default(), &[]), EvictionPlan::default());
    }
}
