//! Plugins compiled into the binary: the grammar sampler (plugins/grammar), which serves
//! structured outputs (`response_format`, `guided_*`, `tools`). A `--plugin` of the same name
//! (`grammar.wasm`) replaces it.

use mlahost_plugins::{FailurePolicy, PluginSpec};
use std::time::Duration;

/// Most grammar instances computing one step's masks at once (the plugin host's limit).
const GRAMMAR_LANES: usize = mlahost_plugins::MAX_INSTANCES;

/// The name requests and the structured-output fields use.
pub const GRAMMAR: &str = "grammar";

static GRAMMAR_WASM: &[u8] = include_bytes!(env!("MLAHOST_GRAMMAR_WASM"));

/// Adds the built-in grammar plugin unless one of that name is already listed. It fails
/// closed (a constrained request never gets unconstrained text), may use more memory than the
/// default (token tries over a 129k vocabulary) and a longer step deadline (one mask per
/// constrained sequence of the step).
pub fn add_builtin(specs: &mut Vec<PluginSpec>) -> std::io::Result<()> {
    if specs.iter().any(|s| s.name == GRAMMAR) {
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("mlahost-plugins-{}", env!("CARGO_PKG_VERSION")));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{GRAMMAR}.wasm"));
    let same = std::fs::read(&path).is_ok_and(|b| b == GRAMMAR_WASM);
    if !same {
        let tmp = dir.join(format!(".{GRAMMAR}.{}", std::process::id()));
        std::fs::write(&tmp, GRAMMAR_WASM)?;
        std::fs::rename(&tmp, &path)?;
    }
    let mut spec = PluginSpec::parse(&path.display().to_string()).map_err(|e| std::io::Error::other(e.to_string()))?;
    spec.failure_policy = FailurePolicy::Closed;
    spec.memory_bytes = 1 << 30;
    spec.deadline = Some(Duration::from_millis(2000));
    // It never reads logits: its masks can be computed before the forward pass, by one
    // instance per lane of the step's sequences (`runtime::plugin_step`), a core each but the
    // engine thread's. (A mask over a 129k vocabulary takes up to ~2 ms in the sandbox: with
    // 15 lanes a batch of 64 fits inside V2-Lite's 14 ms step on an H100.)
    spec.masks_only = true;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    spec.instances = Some(cores.saturating_sub(1).clamp(2, GRAMMAR_LANES));
    specs.push(spec);
    Ok(())
}
