//! Development only: where a 64-row decode kernel's time goes, from the carried binary.
//! `MLAHOST_KERNEL_DEFINES="-DMLA_F8_TRACE"`: the FP8-math kernels sum clock64 cycles per phase
//! of one CTA's producer and first consumer into `mla_f8_trace` (mla_decode_f8mma.cuh);
//! `-DR64_PROF`: the wgmma kernels (bf16 and expanding fp8) into `mla_trace_clk`
//! (mla_decode_wgmma.cuh, which the Python harness's --trace reads too). Without the defines
//! the symbols do not exist and nothing is printed.

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

/// The wgmma kernels' `R64_PROF` record of sequence 0's row tile 0, split 0, over `tiles` tiles
/// (cycles per tile), after one launch of `launch`; None when the kernels carry no record.
pub fn r64_phases(k: &Kernels, tiles: usize, launch: &dyn Fn() -> Result<()>) -> Result<Option<String>> {
    let Some((ptr, bytes)) = k.global("mla_trace_clk")? else {
        return Ok(None);
    };
    let gpu = k.gpu();
    gpu.zero(ptr, bytes)?;
    launch()?;
    let copy = DeviceBuffer::alloc(gpu, 32 * 8)?;
    copy.copy_from_device(0, ptr, 32 * 8)?;
    let t: Vec<u64> = copy.to_vec::<i64>(32)?.into_iter().map(|c| (c as u64).saturating_sub(1)).collect();
    let tiles = tiles.max(1) as u64;
    // marks (mla_decode_wgmma.cuh): 1 prologue, 2 the wait for the tile (WG0) or for P (WG1),
    // 9 S issued, 3 S, 4 softmax + P + rescale, 5 P V, 6 the wait for the other's P V, 7 loads
    let side = |name: &str, w: &[u64], marks: &[(usize, &str)]| {
        let parts: Vec<String> = marks.iter().map(|&(i, l)| format!("{l} {}", w[i] / tiles)).collect();
        format!("{name}: {}, prologue {}", parts.join(", "), w[1])
    };
    Ok(Some(format!(
        "{tiles} tiles; cycles per tile: {}; {}",
        side("WG0", &t[0..16], &[(2, "tile wait"), (9, "S issue"), (3, "S"), (4, "softmax + P"), (5, "P V"), (6, "free wait")]),
        side("WG1", &t[16..32], &[(2, "P wait"), (5, "P V + rescale"), (6, "free wait"), (7, "loads")])
    )))
}
