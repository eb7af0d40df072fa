//! Per-step mask cost of the grammar plugin in its sandbox, for a JSON schema at a 129,280-token
//! vocabulary (the synthetic one of plugins/grammar/examples/common/synthetic_vocab.rs, so the figure
//! compares with that crate's native `mask_cost` example): per sequence-step at batch 1 and 16.
//!
//!     plugins/build.sh
//!     cargo run -p mlahost-plugins --example grammar_mask_cost -- plugins/grammar.wasm
//!
//! (The guest is compiled by Cranelift either way; the dev profile builds wasmtime at opt-level 2.)

#[path = "../../../plugins/grammar/examples/common/synthetic_vocab.rs"]
mod synthetic_vocab;

use mlahost_plugins::{PluginHost, PluginSpec, SampleDecision, SampleSeq, SamplerParams, Vocabulary};
use std::sync::Arc;
use std::time::{Duration, Instant};
use synthetic_vocab::{pick, synthetic_vocab, SCHEMA};

const VOCAB: usize = 129_280;
const STEPS: usize = 48;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "plugins/grammar.wasm".into());
    let mut spec = PluginSpec::parse(&path)?;
    spec.memory_bytes = 1 << 30;
    spec.deadline = Some(Duration::from_secs(30));
    spec.instances = Some(1);
    let (tokens, special, eos) = synthetic_vocab(VOCAB);
    let started = Instant::now();
    let host = PluginHost::load(vec![spec], Vocabulary::new(&tokens, special, eos))?;
    println!("vocabulary {VOCAB}: load + init {:.0} ms", started.elapsed().as_secs_f64() * 1e3);
    let plugin = host.plugins.first().ok_or("no plugin")?.clone();
    let config = format!(r#"{{"type": "json_schema", "schema": {SCHEMA}}}"#);
    let started = Instant::now();
    plugin.check_config(&config)?.map_err(|e| format!("check-config: {e}"))?;
    println!("schema compile (first request, in the sandbox): {:.2} ms", started.elapsed().as_secs_f64() * 1e3);
    for batch in [1usize, 16] {
        let logits = Arc::new(vec![0f32; batch * VOCAB]);
        let mut generated: Vec<Vec<u32>> = vec![Vec::new(); batch];
        let mut per_seq = Vec::new();
        for step in 0..STEPS {
            let seqs: Vec<SampleSeq> = (0..batch)
                .map(|i| SampleSeq {
                    request_id: (batch * 1000 + i) as u64,
                    params: SamplerParams { config: config.clone(), ..Default::default() },
                    prompt_len: 4,
                    generated: &generated[i],
                    batch: &logits,
                    row: i * VOCAB..(i + 1) * VOCAB,
                })
                .collect();
            let t = Instant::now();
            let decisions = plugin.sample(&seqs)?;
            per_seq.push(t.elapsed().as_secs_f64() * 1e6 / batch as f64);
            drop(seqs);
            for (i, d) in decisions.into_iter().enumerate() {
                match d {
                    SampleDecision::Allow(words) => generated[i].extend(pick(&words, (step * 131 + i) as u64)),
                    other => return Err(format!("unexpected decision {other:?}").into()),
                }
            }
        }
        per_seq.sort_by(f64::total_cmp);
        let mean = per_seq.iter().sum::<f64>() / per_seq.len() as f64;
        println!(
            "wasm, batch {batch:>2}: per sequence-step median {:.0} µs, mean {:.0} µs (the call, masks copied out, checked)",
            per_seq[per_seq.len() / 2],
            mean
        );
    }
    Ok(())
}
