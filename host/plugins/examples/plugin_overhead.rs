//! Per-hook cost of a sampler plugin against native sampling, at batch 1, 16 and 64 over a
//! DeepSeek-V2-Lite-sized vocabulary (102,400), plus one router and one admission call.
//!
//!     plugins/build.sh
//!     cargo run --release -p mlahost-plugins --example plugin_overhead -- \
//!         plugins/no_repeat_ngram.wasm plugins/prefix_router.wasm plugins/tenant_quota.wasm

use mlahost_core::ReplicaLoad;
use mlahost_engine::sampling::{sample, Rng, SamplingParams};
use mlahost_plugins::{AdmissionInfo, PluginHost, PluginKind, PluginSpec, SampleSeq, SamplerParams, Vocabulary};
use std::sync::Arc;
use std::time::Instant;

const VOCAB: usize = 102_400;
const GENERATED: usize = 64;
const ROUNDS: usize = 30;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// A bad plugin path or plugin ends the run with its load or call error, not a panic.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let specs = args.iter().map(|a| PluginSpec::parse(a)).collect::<Result<Vec<_>, _>>()?;
    let host = PluginHost::load(specs, Vocabulary::empty())?;
    let mut rng = Rng::seeded(1);
    if let Some(sampler) = host.plugins.iter().find(|p| p.kind == PluginKind::Sampler) {
        println!("sampler `{}`, vocabulary {VOCAB}, {GENERATED} generated tokens per sequence", sampler.spec.name);
        println!("{:>6} {:>14} {:>14} {:>16} {:>16}", "batch", "plugin µs/step", "native µs/step", "plugin µs/seq", "native µs/seq");
        for batch in [1usize, 16, 64] {
            let data: Vec<f32> = (0..batch * VOCAB).map(|_| (rng.next_f64() * 20.0 - 10.0) as f32).collect();
            let data = Arc::new(data);
            let generated: Vec<Vec<u32>> = (0..batch).map(|_| (0..GENERATED).map(|_| (rng.next_u64() % VOCAB as u64) as u32).collect()).collect();
            let params = SamplingParams { temperature: 0.8, top_p: 0.95, ..Default::default() };
            let (mut plugin_us, mut native_us) = (Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                let seqs: Vec<SampleSeq> = (0..batch)
                    .map(|i| SampleSeq {
                        request_id: i as u64,
                        params: SamplerParams { temperature: 0.8, top_p: 0.95, max_tokens: 256, ..Default::default() },
                        prompt_len: 32,
                        generated: &generated[i],
                        batch: &data,
                        row: i * VOCAB..(i + 1) * VOCAB,
                    })
                    .collect();
                let t = Instant::now();
                let d = sampler.sample(&seqs)?;
                plugin_us.push(t.elapsed().as_secs_f64() * 1e6);
                assert_eq!(d.len(), batch);
                let t = Instant::now();
                for i in 0..batch {
                    std::hint::black_box(sample(&data[i * VOCAB..(i + 1) * VOCAB], &params, &mut rng));
                }
                native_us.push(t.elapsed().as_secs_f64() * 1e6);
            }
            let (p, n) = (median(plugin_us), median(native_us));
            println!("{batch:>6} {p:>14.1} {n:>14.1} {:>16.2} {:>16.2}", p / batch as f64, n / batch as f64);
        }
    }
    if let Some(router) = host.single(PluginKind::Router) {
        let loads = vec![ReplicaLoad { waiting: 1, running: 4, free_pages: 900, cached_prefix_tokens: 128 }; 4];
        let us = (0..200)
            .map(|_| {
                let t = Instant::now();
                let _decision = router.route(None, 1024, 0, "m", &loads)?;
                Ok(t.elapsed().as_secs_f64() * 1e6)
            })
            .collect::<Result<Vec<f64>, mlahost_plugins::PluginError>>()?;
        println!("router `{}`: {:.1} µs per call (median of 200, 4 replicas)", router.spec.name, median(us));
    }
    if let Some(adm) = host.single(PluginKind::Admission) {
        let us = (0..200u64)
            .map(|i| {
                let info = AdmissionInfo { request_id: i, tenant: "default".into(), key_id: None, priority: 0, prompt_tokens: 1024, max_tokens: 256, model: "m".into(), now_ms: i };
                let t = Instant::now();
                adm.admit(&info)?;
                Ok(t.elapsed().as_secs_f64() * 1e6)
            })
            .collect::<Result<Vec<f64>, mlahost_plugins::PluginError>>()?;
        println!("admission `{}`: {:.1} µs per call (median of 200)", adm.spec.name, median(us));
    }
    Ok(())
}
