//! The routing rule, in plain Rust (tested natively).

use mlahost_sdk::ReplicaState;
use serde::Deserialize;

/// `{"abs_threshold": 8, "rel_factor": 1.5, "min_cached_tokens": 1}`; every field optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Loads are imbalanced only when `max - min` exceeds this ...
    pub abs_threshold: u32,
    /// ... and `max` exceeds `rel_factor * min`.
    pub rel_factor: f64,
    /// Fewer cached tokens than this is no affinity: route by load.
    pub min_cached_tokens: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            abs_threshold: 8,
            rel_factor: 1.5,
            min_cached_tokens: 1,
        }
    }
}

impl Config {
    /// Parses the plugin's config text (`""` means all defaults).
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(text).map_err(|e| format!("prefix_router config: {e}"))?
        };
        if !config.rel_factor.is_finite() || config.rel_factor < 0.0 {
            return Err(format!(
                "prefix_router config: rel_factor must be >= 0, got {}",
                config.rel_factor
            ));
        }
        Ok(config)
    }
}

/// Whether the loads (`waiting + running`) are out of balance: `max - min > abs_threshold` and
/// `max > rel_factor * min`.
pub fn imbalanced(config: &Config, replicas: &[ReplicaState]) -> bool {
    let loads = replicas.iter().map(ReplicaState::load);
    let (Some(max), Some(min)) = (loads.clone().max(), loads.min()) else {
        return false;
    };
    max - min > config.abs_threshold && f64::from(max) > config.rel_factor * f64::from(min)
}

/// The replica for a request: the one with the most cached-prefix tokens (if at least
/// `min_cached_tokens`; ties: least loaded, then lowest index) unless the loads are imbalanced;
/// otherwise the least loaded (ties: fewest waiting, then lowest index). `None` without replicas.
pub fn choose(config: &Config, replicas: &[ReplicaState]) -> Option<usize> {
    if replicas.is_empty() {
        return None;
    }
    if !imbalanced(config, replicas) {
        let best = (0..replicas.len()).min_by_key(|&i| {
            (
                std::cmp::Reverse(replicas[i].cached_prefix_tokens),
                replicas[i].load(),
                i,
            )
        })?;
        if replicas[best].cached_prefix_tokens >= config.min_cached_tokens {
            return Some(best);
        }
    }
    (0..replicas.len()).min_by_key(|&i| (replicas[i].load(), replicas[i].waiting, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(waiting: u32, running: u32, cached: u32) -> ReplicaState {
        ReplicaState {
            waiting,
            running,
            free_pages: 100,
            cached_prefix_tokens: cached,
        }
    }

    #[test]
    fn affinity_wins_when_balanced() {
        let c = Config::default();
        // Replica 1 is busier but caches the prompt; the gap (4) is within the threshold.
        assert_eq!(choose(&c, &[r(1, 1, 0), r(3, 3, 128)]), Some(1));
    }

    #[test]
    fn least_loaded_when_imbalanced() {
        let c = Config::default();
        // max 20 - min 2 > 8 and 20 > 1.5 * 2: imbalanced, affinity ignored.
        assert_eq!(choose(&c, &[r(1, 1, 0), r(10, 10, 128)]), Some(0));
    }

    #[test]
    fn both_conditions_needed_for_imbalance() {
        let c = Config::default();
        // Gap 10 > 8 but 30 <= 1.5 * 20: still balanced, affinity wins.
        assert!(!imbalanced(&c, &[r(10, 10, 0), r(15, 15, 0)]));
        assert_eq!(choose(&c, &[r(10, 10, 0), r(15, 15, 64)]), Some(1));
        // Ratio high but gap small: balanced.
        assert!(!imbalanced(&c, &[r(0, 1, 0), r(3, 3, 0)]));
    }

    #[test]
    fn too_few_cached_tokens_is_no_affinity() {
        let c = Config {
            min_cached_tokens: 64,
            ..Config::default()
        };
        assert_eq!(choose(&c, &[r(1, 0, 0), r(3, 0, 63)]), Some(0));
        assert_eq!(choose(&c, &[r(1, 0, 0), r(3, 0, 64)]), Some(1));
    }

    #[test]
    fn cache_ties_go_to_the_less_loaded() {
        let c = Config::default();
        assert_eq!(
            choose(&c, &[r(4, 0, 64), r(2, 0, 64), r(2, 0, 64)]),
            Some(1)
        );
    }

    #[test]
    fn load_ties_go_to_fewest_waiting_then_index() {
        let c = Config::default();
        assert_eq!(choose(&c, &[r(3, 1, 0), r(1, 3, 0), r(1, 3, 0)]), Some(1));
        assert_eq!(choose(&c, &[r(0, 0, 0), r(0, 0, 0)]), Some(0));
    }

    #[test]
    fn no_replicas_no_choice() {
        assert_eq!(choose(&Config::default(), &[]), None);
    }

    #[test]
    fn config_parsing() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        let c = Config::parse(r#"{"abs_threshold": 2, "rel_factor": 3.0}"#).unwrap();
        assert_eq!(
            (c.abs_threshold, c.rel_factor, c.min_cached_tokens),
            (2, 3.0, 1)
        );
        assert!(Config::parse(r#"{"abs_treshold": 2}"#)
            .unwrap_err()
            .contains("unknown field"));
        assert!(Config::parse(r#"{"rel_factor": -1}"#).is_err());
        assert!(Config::parse("nope").is_err());
    }
}
