//! The built-in default model: the tiny DeepSeek-V2-Lite-shaped test checkpoint, compiled into
//! the binary so `mlahost serve` works on a fresh machine with no download.

use std::path::PathBuf;

macro_rules! fixture_file {
    ($name:literal) => {
        ($name, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny-v2-lite/", $name)) as &[u8])
    };
}

const FILES: [(&str, &[u8]); 4] = [
    fixture_file!("config.json"),
    fixture_file!("model.safetensors"),
    fixture_file!("tokenizer.json"),
    fixture_file!("tokenizer_config.json"),
];

pub const NAME: &str = "tiny-v2-lite";

/// Writes the files once under the temp directory and returns that checkpoint directory.
pub fn materialize() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("mlahost-default-model-{}", env!("CARGO_PKG_VERSION")));
    std::fs::create_dir_all(&dir)?;
    for (name, bytes) in FILES {
        let path = dir.join(name);
        let same = std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64);
        if !same {
            let tmp = dir.join(format!(".{name}.{}", std::process::id()));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &path)?;
        }
    }
    Ok(dir)
}
