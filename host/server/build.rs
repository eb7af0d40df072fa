//! Builds the grammar sampler plugin (plugins/grammar, a WebAssembly component) so the server
//! can embed it: structured outputs work with no plugin on the command line.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    for watched in ["plugins/grammar", "plugins/Cargo.toml", "plugins/Cargo.lock", "sdk/src", "sdk/Cargo.toml", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let target_dir = root.join("plugins/target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2", "-p", "grammar", "--manifest-path"])
        .arg(root.join("plugins/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir)
        // The outer build's flags are for the host, not for the wasm guest.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("mlahost-server: cannot run cargo to build plugins/grammar");
    assert!(
        status.success(),
        "mlahost-server: building plugins/grammar for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)"
    );
    let wasm = target_dir.join("wasm32-wasip2/release/grammar.wasm");
    println!("cargo:rustc-env=MLAHOST_GRAMMAR_WASM={}", wasm.display());
}
