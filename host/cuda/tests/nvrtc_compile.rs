//! Every kernel family compiles with NVRTC for Hopper (sm_90a) and a portable target (sm_80).
//! Needs only libnvrtc (no GPU); skipped where NVRTC is not installed (CI).

use mlahost_cuda::compile::compile;
use mlahost_cuda::sources::ALL;

#[test]
fn every_family_compiles_for_hopper_and_ampere() {
    // SAFETY: only probes whether the library can be loaded.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        eprintln!("skipped: NVRTC (libnvrtc.so) is not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("mlahost-nvrtc-test-{}", std::process::id()));
    std::env::set_var("MLAHOST_KERNEL_CACHE", &dir);
    for arch in ["sm_90a", "sm_80"] {
        for family in ALL {
            let image = compile(family, arch).unwrap_or_else(|e| panic!("{e}"));
            assert!(image.bytes.len() > 1000 && !image.from_cache, "{} for {arch}", family.file);
            let again = compile(family, arch).unwrap_or_else(|e| panic!("{e}"));
            assert!(again.from_cache && again.bytes == image.bytes, "{} is served from the disk cache", family.file);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
