//! Compiled plugins kept between runs. Cranelift takes about a second to compile the 1.85 MB
//! built-in grammar component, which would otherwise delay every start before the server is
//! healthy. The artifact is kept in a directory only this user can write ($MLAHOST_PLUGIN_CACHE,
//! else $XDG_CACHE_HOME/mlahost/plugins, else ~/.cache/mlahost/plugins), named by the SHA-256 of
//! the component's bytes and the engine's compatibility hash. A cache that cannot be used is
//! skipped: the component is compiled as before.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

/// The compiled component for `bytes`, from the cache when a usable artifact is there.
pub fn load_or_compile(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    match private_dir(cache_root()) {
        Some(dir) => load_or_compile_in(engine, bytes, &dir),
        None => Component::new(engine, bytes),
    }
}

fn load_or_compile_in(engine: &Engine, bytes: &[u8], dir: &Path) -> wasmtime::Result<Component> {
    let path = dir.join(format!("{}.cwasm", key(engine, bytes)));
    if path.is_file() {
        // SAFETY: the file is an artifact this program wrote with `Component::serialize`, in a
        // directory checked to be owned by this user and writable by nobody else, under a name
        // that hashes the component's bytes and the engine's settings; wasmtime still refuses
        // an artifact made by another wasmtime version or configuration.
        if let Ok(component) = unsafe { Component::deserialize_file(engine, &path) } {
            return Ok(component);
        }
    }
    let component = Component::new(engine, bytes)?;
    if let Ok(artifact) = component.serialize() {
        let tmp = dir.join(format!(".{}.{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("artifact"), std::process::id()));
        if std::fs::write(&tmp, artifact).is_ok() && std::fs::rename(&tmp, &path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok(component)
}

fn key(engine: &Engine, bytes: &[u8]) -> String {
    let mut settings = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut settings);
    let mut h = Sha256::new();
    h.update(bytes);
    h.update(settings.finish().to_le_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn cache_root() -> Option<PathBuf> {
    match std::env::var_os("MLAHOST_PLUGIN_CACHE") {
        Some(d) => Some(PathBuf::from(d)),
        None => Some(
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?
                .join("mlahost")
                .join("plugins"),
        ),
    }
}

/// The cache directory, created with mode 0700, when it is this user's alone.
fn private_dir(dir: Option<PathBuf>) -> Option<PathBuf> {
    let dir = dir?;
    std::fs::create_dir_all(&dir).ok()?;
    is_private(&dir).then_some(dir)
}

#[cfg(unix)]
fn is_private(dir: &Path) -> bool {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(meta) = std::fs::metadata(dir) else { return false };
    if meta.mode() & 0o022 != 0 && std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).is_err() {
        return false;
    }
    // Owned by this process's user: a file it creates there carries the same owner.
    let probe = dir.join(format!(".owner.{}", std::process::id()));
    let mine = std::fs::write(&probe, b"").is_ok() && std::fs::metadata(&probe).is_ok_and(|p| p.uid() == meta.uid());
    let _ = std::fs::remove_file(&probe);
    mine && std::fs::metadata(dir).is_ok_and(|m| m.mode() & 0o022 == 0)
}

#[cfg(not(unix))]
fn is_private(_dir: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_load_reads_the_artifact_and_another_component_gets_its_own() {
        let dir = private_dir(Some(std::env::temp_dir().join(format!("mlahost-plugin-cache-test-{}", std::process::id())))).unwrap();
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        let engine = Engine::new(&config).unwrap();
        let fixture = |name: &str| std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v0.1.0").join(name)).unwrap();
        let (a, b) = (fixture("no_repeat_ngram.wasm"), fixture("prefix_router.wasm"));
        let artifacts = || std::fs::read_dir(&dir).unwrap().filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "cwasm"))).count();
        let first = load_or_compile_in(&engine, &a, &dir).unwrap();
        assert_eq!(artifacts(), 1);
        let again = load_or_compile_in(&engine, &a, &dir).unwrap();
        assert_eq!(artifacts(), 1, "the second load reuses the artifact");
        let names = |c: &Component| c.component_type().exports(&engine).map(|(n, _)| n.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&first), names(&again));
        load_or_compile_in(&engine, &b, &dir).unwrap();
        assert_eq!(artifacts(), 2, "another component gets its own");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o022, 0);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
