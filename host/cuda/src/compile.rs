//! NVRTC: compiles a kernel family for the device's architecture at run time and caches the
//! binary on disk (keyed by source, headers, architecture and NVRTC version).

use crate::error::{CudaError, Result};
use crate::sources::{Family, HEADERS};
use cudarc::nvrtc::sys;
use sha2::{Digest, Sha256};
use std::ffi::{c_char, CString};
use std::path::PathBuf;

/// A compiled module image: a CUBIN for a real architecture, or PTX for the driver to JIT.
pub struct Image {
    pub bytes: Vec<u8>,
    pub from_cache: bool,
}

/// Where compiled kernels are kept: $MLAHOST_KERNEL_CACHE, else $XDG_CACHE_HOME/mlahost/kernels,
/// else ~/.cache/mlahost/kernels. A cache that cannot be written is skipped, not an error.
fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("MLAHOST_KERNEL_CACHE") {
        return Some(d.into());
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("mlahost").join("kernels"))
}

fn nvrtc_version() -> Result<(i32, i32)> {
    // SAFETY: only checks whether the library can be loaded.
    if !unsafe { sys::is_culib_present() } {
        return Err(CudaError::Unavailable("the NVRTC library (libnvrtc.so) is not installed".into()));
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two out-pointers to live integers.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| CudaError::Unavailable(format!("nvrtcVersion: {e:?}")))?;
    Ok((major, minor))
}

/// Compiles `family` for `arch` (e.g. "sm_90a"), from the disk cache when possible.
pub fn compile(family: &Family, arch: &str) -> Result<Image> {
    let version = nvrtc_version()?;
    let mut h = Sha256::new();
    h.update(family.source.as_bytes());
    for (name, text) in HEADERS {
        h.update(name.as_bytes());
        h.update(text.as_bytes());
    }
    h.update(format!("{arch} {version:?} {:?}", options(arch)).as_bytes());
    let key: String = h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect();
    let stem = family.file.trim_end_matches(".cu");
    let path = cache_dir().map(|d| d.join(format!("{stem}-{arch}-{key}.cubin")));
    if let Some(bytes) = path.as_ref().and_then(|p| std::fs::read(p).ok()) {
        return Ok(Image { bytes, from_cache: true });
    }
    let started = std::time::Instant::now();
    let bytes = nvrtc_cubin(family, arch)?;
    tracing::info!(kernel = family.file, arch, ms = started.elapsed().as_millis() as u64, "compiled kernels");
    if let Some(p) = &path {
        let written = p.parent().map(std::fs::create_dir_all).transpose().and_then(|_| {
            let tmp = p.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, &bytes)?;
            std::fs::rename(&tmp, p)
        });
        if let Err(e) = written {
            tracing::warn!(path = %p.display(), error = %e, "kernel cache not written");
        }
    }
    Ok(Image { bytes, from_cache: false })
}

fn options(arch: &str) -> Vec<String> {
    let mut o = vec!["--std=c++17".into(), format!("--gpu-architecture={arch}"), "-default-device".into()];
    // Development only: extra macro definitions (e.g. "-DT16_SPLIT_ONE") to time kernel variants
    // with one binary on the GPU machine; they are part of the cache key.
    if let Some(extra) = std::env::var_os("MLAHOST_KERNEL_DEFINES") {
        o.extend(extra.to_string_lossy().split_whitespace().filter(|d| d.starts_with("-D")).map(String::from));
    }
    o
}

fn nvrtc_cubin(family: &Family, arch: &str) -> Result<Vec<u8>> {
    let err = |log: String| CudaError::Compile { file: family.file.into(), arch: arch.into(), log };
    let cstr = |s: &str| CString::new(s).map_err(|_| err("source contains a NUL byte".into()));
    let src = cstr(family.source)?;
    let name = cstr(family.file)?;
    let header_src: Vec<CString> = HEADERS.iter().map(|(_, t)| cstr(t)).collect::<Result<_>>()?;
    let header_names: Vec<CString> = HEADERS.iter().map(|(n, _)| cstr(n)).collect::<Result<_>>()?;
    let src_ptrs: Vec<*const c_char> = header_src.iter().map(|c| c.as_ptr()).collect();
    let name_ptrs: Vec<*const c_char> = header_names.iter().map(|c| c.as_ptr()).collect();
    let opts: Vec<CString> = options(arch).iter().map(|o| cstr(o)).collect::<Result<_>>()?;
    let opt_ptrs: Vec<*const c_char> = opts.iter().map(|c| c.as_ptr()).collect();
    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: every pointer refers to a NUL-terminated string alive until the end of this
    // function; the program is destroyed below on every path.
    unsafe {
        sys::nvrtcCreateProgram(
            &mut prog,
            src.as_ptr(),
            name.as_ptr(),
            HEADERS.len() as i32,
            src_ptrs.as_ptr(),
            name_ptrs.as_ptr(),
        )
        .result()
        .map_err(|e| err(format!("nvrtcCreateProgram: {e:?}")))?;
        let compiled = sys::nvrtcCompileProgram(prog, opt_ptrs.len() as i32, opt_ptrs.as_ptr()).result();
        let out = match compiled {
            Err(e) => {
                let log = cudarc::nvrtc::result::get_program_log(prog)
                    .map(|l| l.iter().take_while(|&&c| c != 0).map(|&c| c as u8 as char).collect::<String>())
                    .unwrap_or_default();
                Err(err(format!("{e:?}\n{log}")))
            }
            Ok(()) => {
                let mut size = 0usize;
                sys::nvrtcGetCUBINSize(prog, &mut size).result().map_err(|e| err(format!("nvrtcGetCUBINSize: {e:?}")))?;
                let mut buf = vec![0u8; size];
                sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char)
                    .result()
                    .map_err(|e| err(format!("nvrtcGetCUBIN: {e:?}")))?;
                Ok(buf)
            }
        };
        let _ = sys::nvrtcDestroyProgram(&mut prog);
        out
    }
}
