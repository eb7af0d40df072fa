//! `mlahost`: the command line of the MLA inference server.

mod backends;
mod bench;
mod generate;
mod gpu_check;
mod plan;
mod parallel_args;
mod plan_parallel;
mod progress;
mod nodes;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mlahost",
    version,
    about = "Inference server for Multi-Head Latent Attention models",
    long_about = "Inference server for Multi-Head Latent Attention models. Without a subcommand, `mlahost` is `mlahost serve`.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: serve::ServeArgs,
    /// Worker threads for the CPU engine (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OpenAI-compatible HTTP API (the default).
    Serve(serve::ServeArgs),
    /// Generate a continuation of one prompt and print it.
    Generate(generate::GenerateArgs),
    /// Print the hash of an API key for a tenants file (`sha256:<hex>`).
    HashKey {
        key: String,
    },
    /// Plan memory: weight bytes, latent-cache bytes per token and per sequence (next to MHA
    /// and GQA-8), and how many sequences of a context fit.
    Plan(plan::PlanArgs),
    /// Check the CUDA backend on this machine's GPU (kernels, end to end) and benchmark it.
    GpuCheck(gpu_check::GpuCheckArgs),
    /// Benchmark an OpenAI-compatible server (mlahost, vLLM, SGLang) like vLLM's serving benchmark.
    Bench(bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("MLAHOST_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse_from(std::env::args_os().map(vllm_short_flag));
    if let Some(n) = cli.threads {
        if let Err(e) = rayon_threads(n) {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    }
    let result = match cli.command {
        Some(Command::Generate(args)) => generate::run(args),
        Some(Command::Serve(args)) => serve::run(args),
        Some(Command::Bench(args)) => bench::run_bench(args),
        Some(Command::GpuCheck(args)) => gpu_check::run(args),
        Some(Command::Plan(args)) => plan::run(args),
        Some(Command::HashKey { key }) => {
            println!("{}", mlahost_server::tenants::hash_key(&key));
            Ok(())
        }
        None => serve::run(cli.serve),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

fn rayon_threads(n: usize) -> anyhow::Result<()> {
    anyhow::ensure!(n > 0, "--threads must be at least 1");
    mlahost_engine::cpu::set_threads(n)?;
    Ok(())
}

/// The error and its causes on one line, each cause once: many errors already quote their
/// source in their own message, and `{:#}` would print it again.
fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if !out.contains(&msg) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&msg);
        }
    }
    out
}

/// vLLM's single-dash multi-letter flags, which clap has no form for.
fn vllm_short_flag(arg: std::ffi::OsString) -> std::ffi::OsString {
    match arg.to_str() {
        Some("-tp") => "--tensor-parallel-size".into(),
        Some("-dp") => "--data-parallel-size".into(),
        _ => arg,
    }
}
