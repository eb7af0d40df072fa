//! Per-step mask cost of the grammar engine natively (no sandbox), for a JSON schema at a
//! 129,280-token vocabulary (DeepSeek-V3's size; a synthetic vocabulary, see common/synthetic_vocab.rs).
//! The in-sandbox figure comes from host/plugins/examples/grammar_mask_cost.rs.
//!
//!     cargo run --release --manifest-path plugins/Cargo.toml -p grammar --example mask_cost

#[path = "common/synthetic_vocab.rs"]
mod synthetic_vocab;

use grammar::Grammar;
use mlahost_sdk::{Decision, Vocabulary};
use std::time::Instant;
use synthetic_vocab::{pick, synthetic_vocab, SCHEMA};

const VOCAB: usize = 129_280;
const SEQUENCES: u64 = 16;
const STEPS: usize = 48;

fn main() -> Result<(), String> {
    let (tokens, special, eos) = synthetic_vocab(VOCAB);
    let started = Instant::now();
    let mut g = Grammar::new(&Vocabulary::new(&tokens, special, eos))?;
    println!("vocabulary {VOCAB}: init {:.0} ms", started.elapsed().as_secs_f64() * 1e3);
    let config = format!(r#"{{"type": "json_schema", "schema": {SCHEMA}}}"#);
    let started = Instant::now();
    g.check_config_native(&config)?;
    println!("schema compile (first request): {:.2} ms", started.elapsed().as_secs_f64() * 1e3);
    let mut generated: Vec<Vec<u32>> = vec![Vec::new(); SEQUENCES as usize];
    let mut per_mask = Vec::new();
    for step in 0..STEPS {
        for (id, out) in generated.iter_mut().enumerate() {
            let t = Instant::now();
            let d = g.decide(id as u64, &config, out);
            per_mask.push(t.elapsed().as_secs_f64() * 1e6);
            match d {
                Decision::Allow(words) => out.extend(pick(&words, (step * 131 + id) as u64)),
                other => return Err(format!("unexpected decision {other:?}")),
            }
        }
    }
    per_mask.sort_by(f64::total_cmp);
    let mean = per_mask.iter().sum::<f64>() / per_mask.len() as f64;
    println!(
        "native mask per sequence-step over {} masks: median {:.0} µs, mean {:.0} µs, p90 {:.0} µs",
        per_mask.len(),
        per_mask[per_mask.len() / 2],
        mean,
        per_mask[per_mask.len() * 9 / 10]
    );
    Ok(())
}
