//! What a request asks of the sampler (vLLM's sampling parameters) and the seeded generator it
//! draws with; apart from `sampling`'s functions so the batch types can carry them.

/// Temperatures below this sample greedily.
pub const MIN_TEMPERATURE: f32 = 1e-5;

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 1.0 disables nucleus sampling.
    pub top_p: f32,
    /// 0 disables the top-k cut.
    pub top_k: usize,
    /// Drop tokens whose probability is below `min_p` times the best one's (0 disables).
    pub min_p: f32,
    pub seed: Option<u64>,
    /// OpenAI's: subtract once for any token already generated.
    pub presence_penalty: f32,
    /// OpenAI's: subtract per occurrence in the generated tokens.
    pub frequency_penalty: f32,
    /// CTRL/vLLM's: divide positive (multiply negative) logits of tokens seen in prompt or output.
    pub repetition_penalty: f32,
    /// OpenAI's `logit_bias`: added to these tokens' logits (clamped to [-100, 100]).
    pub logit_bias: Vec<(u32, f32)>,
    /// vLLM's `allowed_token_ids`: every other token is banned (None: all allowed).
    pub allowed_token_ids: Option<Vec<u32>>,
    /// vLLM's `bad_words`, tokenized: the last token of each sequence is banned whenever the
    /// generated tokens end with the ones before it (a one-token word is always banned).
    pub bad_words: Vec<Vec<u32>>,
    /// Tokens in `min_tokens_banned` are banned until this many tokens are generated.
    pub min_tokens: usize,
    /// The request's stop tokens: `stop_token_ids` and, unless `ignore_eos`, the model's EOS.
    pub min_tokens_banned: Vec<u32>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            seed: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            logit_bias: Vec::new(),
            allowed_token_ids: None,
            bad_words: Vec::new(),
            min_tokens: 0,
            min_tokens_banned: Vec::new(),
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(format!("temperature must be >= 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        for (name, v) in [("presence_penalty", self.presence_penalty), ("frequency_penalty", self.frequency_penalty)] {
            if !(-2.0..=2.0).contains(&v) {
                return Err(format!("{name} must be in [-2, 2], got {v}"));
            }
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(format!("repetition_penalty must be > 0, got {}", self.repetition_penalty));
        }
        if let Some((t, b)) = self.logit_bias.iter().find(|(_, b)| !b.is_finite()) {
            return Err(format!("logit_bias of token {t} must be a finite number, got {b}"));
        }
        if self.allowed_token_ids.as_ref().is_some_and(Vec::is_empty) {
            return Err("allowed_token_ids must not be empty".to_string());
        }
        Ok(())
    }

    /// Greedy: temperature 0, or below the floor where dividing by it overflows the logits
    /// (such a distribution is argmax anyway), or a top-k of 1.
    pub fn is_greedy(&self) -> bool {
        self.temperature < MIN_TEMPERATURE || self.top_k == 1
    }

    pub fn has_penalties(&self) -> bool {
        self.presence_penalty != 0.0 || self.frequency_penalty != 0.0 || self.repetition_penalty != 1.0
    }

    /// Whether a logits processor (`crate::logits_processors`) changes the row before sampling.
    pub fn has_logits_processors(&self) -> bool {
        !self.logit_bias.is_empty()
            || self.allowed_token_ids.is_some()
            || !self.bad_words.is_empty()
            || (self.min_tokens > 0 && !self.min_tokens_banned.is_empty())
    }
}

/// xoshiro256** seeded through splitmix64: small, fast and reproducible across platforms.
#[derive(Debug, Clone)]
pub struct Rng([u64; 4]);

impl Rng {
    pub fn seeded(seed: u64) -> Self {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Self([next(), next(), next(), next()])
    }

    /// Seeded from the process's hash randomness when the request gives no seed.
    pub fn from_entropy() -> Self {
        use std::hash::{BuildHasher, RandomState};
        Self::seeded(RandomState::new().hash_one(std::time::SystemTime::now()))
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
