//! Benchmark prompts: random token ids, shared-prefix groups, or a JSONL file (plain prompts
//! or ShareGPT conversations).

use crate::BenchError;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Ids(Vec<u32>),
    Text(String),
}

#[derive(Debug, Clone)]
pub struct Item {
    pub prompt: Prompt,
    pub max_tokens: usize,
}

#[derive(Debug, Clone)]
pub enum DatasetSpec {
    Random,
    SharedPrefix { groups: usize, prefix_len: usize },
    File(std::path::PathBuf),
}

/// splitmix64: reproducible prompts from `--seed`.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
}

const WORDS: &[&str] = &[
    "the", "model", "latent", "attention", "page", "cache", "token", "river", "stone", "light", "quick", "brown",
    "fox", "jumps", "over", "lazy", "dog", "server", "plugin", "expert", "router", "batch", "stream", "value",
];

/// Prompt ids avoid the lowest ids, where special tokens usually sit.
const FIRST_ID: u64 = 16;

pub struct Options {
    pub num_prompts: usize,
    pub input_len: usize,
    pub output_len: usize,
    pub vocab: u64,
    /// Chat endpoints need text; completions get token ids.
    pub text: bool,
    pub seed: u64,
}

pub fn build(spec: &DatasetSpec, o: &Options) -> Result<Vec<Item>, BenchError> {
    let mut rng = Rng::new(o.seed);
    let vocab = o.vocab.max(FIRST_ID + 1);
    let random = |len: usize, rng: &mut Rng| -> Prompt {
        if o.text {
            Prompt::Text((0..len).map(|_| WORDS[rng.below(WORDS.len() as u64) as usize]).collect::<Vec<_>>().join(" "))
        } else {
            Prompt::Ids((0..len).map(|_| (FIRST_ID + rng.below(vocab - FIRST_ID)) as u32).collect())
        }
    };
    match spec {
        DatasetSpec::Random => {
            Ok((0..o.num_prompts).map(|_| Item { prompt: random(o.input_len, &mut rng), max_tokens: o.output_len }).collect())
        }
        DatasetSpec::SharedPrefix { groups, prefix_len } => {
            let prefixes: Vec<Prompt> = (0..(*groups).max(1)).map(|_| random(*prefix_len, &mut rng)).collect();
            Ok((0..o.num_prompts)
                .map(|i| {
                    let question = random(o.input_len, &mut rng);
                    let prompt = match (&prefixes[i % prefixes.len()], question) {
                        (Prompt::Ids(p), Prompt::Ids(q)) => Prompt::Ids(p.iter().chain(&q).copied().collect()),
                        (Prompt::Text(p), Prompt::Text(q)) => Prompt::Text(format!("{p}\n\n{q}")),
                        _ => unreachable!("one dataset uses one prompt kind"),
                    };
                    Item { prompt, max_tokens: o.output_len }
                })
                .collect())
        }
        DatasetSpec::File(path) => read_jsonl(path, o),
    }
}

/// One JSON object per line: {"prompt": "...", "max_tokens"|"output_len": N} or ShareGPT's
/// {"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", ...}]}.
fn read_jsonl(path: &std::path::Path, o: &Options) -> Result<Vec<Item>, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|e| BenchError::Usage(format!("{}: {e}", path.display())))?;
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |m: &str| BenchError::Usage(format!("{}:{}: {m}", path.display(), n + 1));
        let v: Value = serde_json::from_str(line).map_err(|e| bad(&e.to_string()))?;
        let prompt = match (v.get("prompt"), v.get("conversations")) {
            (Some(Value::String(s)), _) => s.clone(),
            (_, Some(Value::Array(turns))) => turns
                .iter()
                .find(|t| matches!(t.get("from").and_then(Value::as_str), Some("human" | "user")))
                .and_then(|t| t.get("value"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad("no human turn"))?
                .to_string(),
            _ => return Err(bad("expected a \"prompt\" string or \"conversations\"")),
        };
        let max_tokens = v
            .get("max_tokens")
            .or(v.get("output_len"))
            .and_then(Value::as_u64)
            .map_or(o.output_len, |x| x as usize);
        items.push(Item { prompt: Prompt::Text(prompt), max_tokens });
        if items.len() == o.num_prompts {
            break;
        }
    }
    if items.is_empty() {
        return Err(BenchError::Usage(format!("{}: no prompts", path.display())));
    }
    // Cycle through the file when it holds fewer prompts than asked for.
    let mut i = 0;
    while items.len() < o.num_prompts {
        items.push(items[i].clone());
        i += 1;
    }
    Ok(items)
}
