//! CPU decode steps timed inside one process, alternating kernel families (and latent-cache
//! dtypes), so that A/B figures on a shared, noisy machine see the same conditions.
//!
//!     cargo run --release -p mlahost-engine --example cpu_decode_ab -- DIR \
//!         [--threads N] [--isa avx512,avx2] [--kv f32,bf16] [--prompt 32] [--tokens 64] [--rounds 5]
//!
//! Each round runs every (isa, kv) pair once: a prompt of BOS + fixed pseudo-random ids, then
//! greedy single-token forwards; it times the forwards only (no sampling or log-softmax) and
//! prints per pair the median and range of decode tok/s, and whether every pair produced the
//! same greedy tokens as the first.

use mlahost_engine::cpu::{set_kernel_isa, set_threads, AttentionMode, CpuOptions, Isa};
use mlahost_engine::{Backend, CacheGeometry, KvCacheDtype, LoadedModel, LogitsRequest, SeqChunk};
use mlahost_core::{BlockAllocator, BlockTable};
use std::time::Instant;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
}

fn run(model: &LoadedModel, kv: KvCacheDtype, prompt: &[u32], n: usize) -> Res<(Vec<u32>, f64)> {
    let geometry = CacheGeometry { num_pages: (prompt.len() + n).div_ceil(64) + 1, page_size: 64 };
    let mut backend = model.cpu_backend(CpuOptions { geometry, attention: AttentionMode::Auto, kv_dtype: kv })?;
    let mut pages = BlockAllocator::new(geometry.num_pages, geometry.page_size)?;
    let mut table = BlockTable::new();
    let (mut input, mut pos, mut out, mut decode_s) = (prompt.to_vec(), 0, Vec::new(), 0.0);
    while out.len() < n {
        table.ensure_capacity(&mut pages, pos + input.len())?;
        let chunk = SeqChunk { tokens: &input, start_pos: pos, block_table: table.pages(), logits: LogitsRequest::Last };
        let t = Instant::now();
        let logits = backend.forward(&[chunk])?;
        if pos > 0 {
            decode_s += t.elapsed().as_secs_f64();
        }
        let row = logits.last_of(0).ok_or("no logits row")?;
        let best = row.iter().enumerate().fold(0, |b, (i, &v)| if v > row[b] { i } else { b });
        out.push(best as u32);
        pos += input.len();
        input = vec![best as u32];
    }
    Ok((out, decode_s))
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().ok_or("usage: cpu_decode_ab DIR [options]")?;
    set_threads(arg(&args, "--threads", "2").parse()?)?;
    let isas: Vec<Isa> = arg(&args, "--isa", Isa::best().as_str()).split(',').map(str::parse).collect::<Result<_, _>>()?;
    let kvs: Vec<KvCacheDtype> = arg(&args, "--kv", "f32")
        .split(',')
        .map(|s| match s {
            "bf16" => Ok(KvCacheDtype::Bf16),
            "f32" => Ok(KvCacheDtype::F32),
            _ => Err(format!("--kv {s}: f32 or bf16")),
        })
        .collect::<Result<_, _>>()?;
    let (p, n, rounds): (usize, usize, usize) =
        (arg(&args, "--prompt", "32").parse()?, arg(&args, "--tokens", "64").parse()?, arg(&args, "--rounds", "5").parse()?);
    let model = LoadedModel::load(std::path::Path::new(dir), None)?;
    let bos = model.config.bos_token_id.unwrap_or(0);
    let mut state = 0x9e37_79b9_u64;
    let mut prompt = vec![bos];
    prompt.extend((1..p).map(|_| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        3 + ((state >> 33) % 99_997) as u32
    }));
    let pairs: Vec<(Isa, KvCacheDtype)> = isas.iter().flat_map(|&i| kvs.iter().map(move |&k| (i, k))).collect();
    let mut rates = vec![Vec::new(); pairs.len()];
    let mut first: Option<Vec<u32>> = None;
    let mut same = vec![true; pairs.len()];
    for round in 0..rounds {
        for (i, &(isa, kv)) in pairs.iter().enumerate() {
            set_kernel_isa(isa)?;
            let (toks, s) = run(&model, kv, &prompt, n)?;
            rates[i].push((n - 1) as f64 / s);
            let f = first.get_or_insert_with(|| toks.clone());
            same[i] &= *f == toks;
            eprintln!("round {round} {} kv {kv}: {:.1} tok/s", isa.as_str(), rates[i].last().unwrap_or(&0.0));
        }
    }
    for (i, &(isa, kv)) in pairs.iter().enumerate() {
        let mut r = rates[i].clone();
        r.sort_by(f64::total_cmp);
        println!(
            "{:7} kv {:5} decode tok/s median {:7.1} [{:.1}-{:.1}]  tokens {}",
            isa.as_str(),
            kv.as_str(),
            r[r.len() / 2],
            r[0],
            r[r.len() - 1],
            if same[i] { "= first pair's" } else { "DIFFER from the first pair's" }
        );
    }
    Ok(())
}
