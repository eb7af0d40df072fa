//! A lean build of `mlahost gpu-check` (no server, no plugins) for quick kernel iterations:
//!
//!     cargo build --release -p mlahost-cuda --example gpu_check
//!     gpu_check [--bench] [--bench-only] [--model DIR]... [--fixtures DIR] [--seed N] [--bench-json FILE]

use mlahost_cuda::check::runner::{run, CheckOptions};
use std::path::PathBuf;

fn main() -> std::process::ExitCode {
    let mut o = CheckOptions { fixtures: "tests/fixtures".into(), seed: mlahost_cuda::check::Rng::fresh().1, ..Default::default() };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match a.as_str() {
            "--bench" => o.bench = true,
            "--bench-only" => o.bench_only = true,
            "--model" => o.models.push(PathBuf::from(value())),
            "--fixtures" => o.fixtures = PathBuf::from(value()),
            "--bench-json" => o.bench_json = Some(PathBuf::from(value())),
            "--seed" => o.seed = value().parse().unwrap_or(o.seed),
            "--ordinal" => o.ordinal = value().parse().unwrap_or(0),
            other => {
                eprintln!("unknown argument {other}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    match run(&o) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("some GPU checks failed");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
