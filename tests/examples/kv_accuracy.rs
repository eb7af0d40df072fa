//! Latent-cache dtype accuracy on one checkpoint: f32 (the reference), bf16 and fp8.
//!
//!     cargo run --release -p mlahost-tests --example kv_accuracy -- DIR [TOKENS]
//!
//! A greedy run of TOKENS (default 256) tokens from a fixed prompt with each cache dtype; the
//! f32 continuation teacher-forced through each dtype (top-1 agreement, |Δ logprob| of the
//! chosen token); and the teacher-forced perplexity of a fixed text.

use mlahost_engine::{KvCacheDtype, LoadedModel};
use mlahost_tests::accuracy::{compare, greedy, perplexity, teacher_forced, PERPLEXITY_TEXT};
use std::path::PathBuf;
use std::time::Instant;

const PROMPT: &str = "Once upon a time, in a data center far away, a server";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: kv_accuracy DIR [TOKENS]")?);
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(256);
    let started = Instant::now();
    let model = LoadedModel::load(&dir, None)?;
    let prompt = model.tokenizer.encode(PROMPT, true)?;
    let text = model.tokenizer.encode(PERPLEXITY_TEXT, true)?;
    let reference = greedy(&model, KvCacheDtype::F32, &prompt, n)?;
    let ref_forced = teacher_forced(&model, KvCacheDtype::F32, &prompt, &reference.token_ids)?;
    let ref_ppl = perplexity(&model, KvCacheDtype::F32, &text)?;
    println!("{}: prompt {} tokens, greedy {n} tokens, perplexity text {} tokens", dir.display(), prompt.len(), text.len());
    println!("| cache | free-run prefix = f32 | f32 margin there | teacher-forced top-1 | mean abs dlogprob | max abs dlogprob | perplexity |");
    println!("|---|---|---|---|---|---|---|");
    println!("| f32 | {n}/{n} | - | {n}/{n} | 0 | 0 | {ref_ppl:.4} |");
    let mut forced = vec![];
    for dtype in [KvCacheDtype::Bf16, KvCacheDtype::Fp8] {
        let run = greedy(&model, dtype, &prompt, n)?;
        let f = teacher_forced(&model, dtype, &prompt, &reference.token_ids)?;
        let ppl = perplexity(&model, dtype, &text)?;
        let a = compare(&reference, &ref_forced, &run, &f);
        let margin = a.margin_at_divergence.map_or("-".to_string(), |m| format!("{m:.4}"));
        println!(
            "| {dtype} | {}/{n} | {margin} | {}/{} | {:.2e} | {:.2e} | {ppl:.4} ({:+.3}%) |",
            a.free_running_prefix, a.top1_agree, a.steps, a.mean_abs_dlogprob, a.max_abs_dlogprob, (ppl / ref_ppl - 1.0) * 100.0
        );
        forced.push((run, f));
    }
    // fp8 against bf16 directly (bf16 as the reference).
    let (bf, fp) = (&forced[0].0, &forced[1].0);
    let bf_on_bf = teacher_forced(&model, KvCacheDtype::Bf16, &prompt, &bf.token_ids)?;
    let fp_on_bf = teacher_forced(&model, KvCacheDtype::Fp8, &prompt, &bf.token_ids)?;
    let a = compare(bf, &bf_on_bf, fp, &fp_on_bf);
    println!(
        "\nfp8 vs bf16: free-run prefix {}/{n}, teacher-forced top-1 {}/{}, mean |dlogprob| {:.2e}, max {:.2e}  ({:.1} s in all)",
        a.free_running_prefix, a.top1_agree, a.steps, a.mean_abs_dlogprob, a.max_abs_dlogprob, started.elapsed().as_secs_f64()
    );
    Ok(())
}
