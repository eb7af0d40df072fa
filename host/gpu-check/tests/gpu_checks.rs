//! The GPU self-checks as cargo tests: every kernel against its naive reference, and the backend
//! against the CPU engine and the transformers goldens. Skipped (passing) where no CUDA device
//! is present, as on CI; on a GPU machine without Rust, `mlahost gpu-check` runs the same checks.

use mlahost_gpu_check::{e2e, kernels, report, Rng};
use mlahost_cuda::{blas::Blas, CudaError, Gpu, Kernels};
use mlahost_engine::{KvCacheDtype, LoadedModel};

fn gpu() -> Option<std::sync::Arc<Gpu>> {
    match Gpu::open(0) {
        Ok(g) => Some(g),
        Err(CudaError::Unavailable(why)) => {
            eprintln!("skipped: {why}");
            None
        }
        Err(e) => panic!("CUDA is present but unusable: {e}"),
    }
}

#[test]
fn kernels_match_naive_references() {
    let Some(gpu) = gpu() else { return };
    let (_, seed) = Rng::fresh();
    let k = Kernels::load(&gpu).expect("kernels");
    let blas = Blas::new(&gpu).expect("cuBLAS");
    let checks = kernels::run_all(&k, &blas, seed).expect("kernel checks ran");
    let (ok, table) = report(&format!("kernels (seed {seed})"), &checks);
    println!("{table}");
    assert!(ok, "{table}");
}

#[test]
fn backend_matches_cpu_and_goldens() {
    if gpu().is_none() {
        return;
    }
    let (_, seed) = Rng::fresh();
    let mut checks = Vec::new();
    for name in mlahost_tests::FIXTURES {
        let model = LoadedModel::load(&mlahost_tests::fixture_dir(name), None).expect("fixture");
        let golden = mlahost_tests::golden(name);
        checks.push(e2e::against_goldens(&model, &golden, Some(0), 16).expect("goldens"));
        checks.push(e2e::against_cpu(&model, 0, 64, KvCacheDtype::Bf16, seed, 16, e2e::weights_are_bf16(&model.weights().expect("weights"))).expect("cpu"));
    }
    let (ok, table) = report(&format!("end to end (seed {seed})"), &checks);
    println!("{table}");
    assert!(ok, "{table}");
}

/// The FP8 rows' floor, on the CPU alone (it runs on CI): two honest FP8 references, one with
/// its FP8 inputs moved below bf16's resolution, part measurably (the rounding is a step
/// function) but stay close; the figures are printed for the performance page.
#[test]
fn fp8_rounding_floor_is_measurable_on_the_cpu() {
    let (_, seed) = Rng::fresh();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    for name in ["tiny-v2-lite", "tiny-v2", "tiny-v3-fp8"] {
        let model = LoadedModel::load(&root.join(name), None).expect("fixture");
        let c = mlahost_gpu_check::e2e_fp8::rounding_floor(&model, 64, seed, 24).expect("floor");
        println!("{name} (seed {seed}): {}", c.detail);
        assert!(c.error > 0.0 && c.error < 1.0, "{name}: the jittered reference must differ, a little: {}", c.detail);
    }
}
