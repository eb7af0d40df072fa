//! The built-in default model: a small DeepSeek-V2-architecture model trained by the project on
//! freely licensed English text (examples/train), compiled into the binary so `mlahost serve`
//! answers in English on a fresh machine with no download.

use std::path::PathBuf;

#[cfg(feature = "built-in-model")]
macro_rules! model_file {
    ($name:literal) => {
        ($name, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/english-18m/", $name)) as &[u8])
    };
}

#[cfg(feature = "built-in-model")]
const FILES: [(&str, &[u8]); 5] = [
    model_file!("config.json"),
    model_file!("generation_config.json"),
    model_file!("model.safetensors"),
    model_file!("tokenizer.json"),
    model_file!("tokenizer_config.json"),
];

/// A build without the `built-in-model` feature (a GPU machine's binary) has no files.
#[cfg(not(feature = "built-in-model"))]
const FILES: [(&str, &[u8]); 0] = [];

pub const NAME: &str = "english-18m";

/// FNV-1a over every file: a rebuilt binary with other weights gets its own directory instead of
/// reusing a stale one of the same version.
fn content_key() -> u64 {
    FILES.iter().flat_map(|(name, bytes)| name.as_bytes().iter().chain(bytes.iter())).fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// Writes the files once under the temp directory and returns that checkpoint directory.
pub fn materialize() -> std::io::Result<PathBuf> {
    if FILES.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "this build has no built-in model (built without the `built-in-model` feature): pass --model DIR"));
    }
    let dir = std::env::temp_dir().join(format!("mlahost-{NAME}-{:016x}", content_key()));
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
