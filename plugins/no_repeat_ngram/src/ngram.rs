//! The n-gram rule, in plain Rust (tested natively).

use serde::Deserialize;

/// The plugin's config: `{"n": 3, "banned_ids": []}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The n-gram size; 0 turns the n-gram rule off.
    pub n: u32,
    /// Token ids banned at every step of every sequence.
    pub banned_ids: Vec<u32>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            n: 3,
            banned_ids: Vec::new(),
        }
    }
}

impl Config {
    /// Parses the plugin's config text (`""` means the defaults).
    pub fn parse(text: &str) -> Result<Config, String> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_json::from_str(text).map_err(|e| format!("no_repeat_ngram config: {e}"))
    }
}

/// A request's `sampler_config`: `{"n": 2}` overrides the n-gram size for that request, and
/// `banned_ids` adds to the plugin's list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RequestConfig {
    /// The n-gram size for this request.
    pub n: Option<u32>,
    /// More ids to ban for this request.
    pub banned_ids: Vec<u32>,
}

impl RequestConfig {
    /// Parses a request's `sampler_config` (JSON text, `""` when absent). Text that is not such
    /// an object counts as absent: one request's typo must not fail the whole decode step.
    pub fn parse(text: &str) -> RequestConfig {
        serde_json::from_str(text).unwrap_or_default()
    }
}

/// Tokens that would complete an `n`-gram already present in `generated`: for every earlier
/// occurrence of the last `n - 1` tokens, the token that followed it. With `n == 1`, every token
/// generated so far; with `n == 0`, none. Unsorted, may repeat.
pub fn banned_continuations(generated: &[u32], n: usize) -> Vec<u32> {
    if n == 0 || generated.len() < n {
        // Fewer than n tokens: no complete n-gram yet (for n == 1, nothing generated).
        return Vec::new();
    }
    let tail = &generated[generated.len() - (n - 1)..];
    generated
        .windows(n)
        .filter(|w| &w[..n - 1] == tail)
        .map(|w| w[n - 1])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut v: Vec<u32>) -> Vec<u32> {
        v.sort_unstable();
        v.dedup();
        v
    }

    #[test]
    fn trigram_bans_what_followed_the_last_bigram() {
        // "a b c ... a b" : c would repeat "a b c".
        assert_eq!(banned_continuations(&[1, 2, 3, 4, 1, 2], 3), vec![3]);
        // Two earlier "a b": both followers banned.
        assert_eq!(
            sorted(banned_continuations(&[1, 2, 3, 1, 2, 5, 1, 2], 3)),
            vec![3, 5]
        );
        // The last bigram never appeared before.
        assert!(banned_continuations(&[1, 2, 3, 4], 3).is_empty());
    }

    #[test]
    fn small_and_degenerate_sizes() {
        assert_eq!(sorted(banned_continuations(&[7, 8, 7], 1)), vec![7, 8]);
        assert_eq!(banned_continuations(&[7, 8, 7], 2), vec![8]);
        assert!(banned_continuations(&[7, 8, 7], 0).is_empty());
        assert!(banned_continuations(&[], 1).is_empty());
        assert!(banned_continuations(&[1, 2], 3).is_empty());
        // A run: "5 5" then 5 would repeat "5 5 5".
        assert_eq!(sorted(banned_continuations(&[5, 5, 5], 3)), vec![5]);
    }

    #[test]
    fn configs() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert_eq!(
            Config::parse(r#"{"banned_ids": [1]}"#).unwrap(),
            Config {
                n: 3,
                banned_ids: vec![1]
            }
        );
        assert!(Config::parse(r#"{"size": 3}"#).is_err());
        assert_eq!(RequestConfig::parse(r#"{"n": 2}"#).n, Some(2));
        assert_eq!(RequestConfig::parse(""), RequestConfig::default());
        assert_eq!(RequestConfig::parse("not json"), RequestConfig::default());
    }
}
