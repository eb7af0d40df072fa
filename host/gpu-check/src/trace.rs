//! Development only: where the FP8-math decode kernel's time goes. Kernels built with
//! `MLAHOST_KERNEL_DEFINES="-DMLA_F8_TRACE"` sum clock64 cycles per phase of one CTA's producer
//! and first consumer into `mla_f8_trace` (mla_decode_f8mma.cuh); without it the symbol does not
//! exist and nothing is printed.

use mlahost_cuda::gpu::DeviceBuffer;
use mlahost_cuda::module::Kernels;
use mlahost_cuda::Result;

const PRODUCER: [&str; 6] = ["landed wait", "S + folds", "softmax", "P' + arrive", "free wait", "prologue"];
const CONSUMER: [&str; 6] = ["landed arrive", "P' wait", "rescale", "P V", "loads", "prologue"];

/// Runs `launch` once with the trace zeroed and returns the phases as one line (cycles per tile;
/// the prologues in cycles), or None when the kernels carry no trace.
pub fn f8_phases(k: &Kernels, launch: &dyn Fn() -> Result<()>) -> Result<Option<String>> {
    let Some((ptr, bytes)) = k.global("mla_f8_trace")? else {
        return Ok(None);
    };
    let gpu = k.gpu();
    gpu.zero(ptr, bytes)?;
    launch()?;
    let copy = DeviceBuffer::alloc(gpu, bytes)?;
    copy.copy_from_device(0, ptr, bytes)?;
    let t: Vec<u64> = copy.to_vec::<i64>(bytes / 8)?.into_iter().map(|c| c as u64).collect();
    if t.len() < 16 {
        return Ok(None);
    }
    let tiles = t[15].max(1);
    let side = |name: &str, labels: &[&str; 6], sums: &[u64]| {
        let per_tile: Vec<String> = labels[..5].iter().zip(sums).map(|(l, &c)| format!("{l} {}", c / tiles)).collect();
        format!("{name}: {}, {} {}", per_tile.join(", "), labels[5], sums[5])
    };
    Ok(Some(format!(
        "{} tiles; cycles per tile: {}; {}",
        t[15],
        side("producer", &PRODUCER, &t[0..6]),
        side("consumer 0", &CONSUMER, &t[8..14])
    )))
}
