//! Development only: where a 64-row decode kernel's time goes, from the carried binary.
//! `MLAHOST_KERNEL_DEFINES="-DMLA_F8_TRACE"`: the FP8-math kernels sum clock64 cycles per phase
//! of one CTA's producer and first consumer into `mla_f8_trace` (mla_decode_common.cuh);
//! `-DR64_PROF`: the wgmma kernels (bf16 and expanding fp8) into `mla_trace_clk`
//! (mla_decode_wgmma.cuh, which the Python harness's --trace reads too). Without the defines
//! the symbols do not exist and nothing is printed.

use mlahost_cuda::gpu::DeviceBuffer;
use mlahost_cuda::module::Kernels;
use mlahost_cuda::Result;

const PRODUCER: [&str; 6] = ["landed wait", "S + folds", "softmax", "P' + arrive", "free wait", "prologue"];
const CONSUMER: [&str; 6] = ["landed arrive", "P' wait", "rescale", "P V", "loads", "prologue"];

/// The first `words` u64 of the `__device__` array `name` after one launch of `launch` with the
/// array zeroed; None when the kernels carry no such array (or a shorter one).
fn record_after(k: &Kernels, name: &str, words: usize, launch: &dyn Fn() -> Result<()>) -> Result<Option<Vec<u64>>> {
    let Some((ptr, bytes)) = k.global(name)? else {
        return Ok(None);
    };
    if bytes < words * 8 {
        return Ok(None);
    }
    let gpu = k.gpu();
    gpu.zero(ptr, bytes)?;
    launch()?;
    let copy = DeviceBuffer::alloc(gpu, words * 8)?;
    copy.copy_from_device(0, ptr, words * 8)?;
    Ok(Some(copy.to_vec::<i64>(words)?.into_iter().map(|c| c as u64).collect()))
}

/// The FP8-math kernels' phases (`mla_f8_trace`) as one line: cycles per tile, the prologues in
/// cycles.
pub fn f8_phases(k: &Kernels, launch: &dyn Fn() -> Result<()>) -> Result<Option<String>> {
    Ok(record_after(k, "mla_f8_trace", 16, launch)?.map(|t| format_f8(&t)))
}

/// The wgmma kernels' `R64_PROF` record of sequence 0's row tile 0, split 0, over `tiles` tiles
/// (cycles per tile).
pub fn r64_phases(k: &Kernels, tiles: usize, launch: &dyn Fn() -> Result<()>) -> Result<Option<String>> {
    Ok(record_after(k, "mla_trace_clk", 32, launch)?.map(|t| format_r64(&t, tiles)))
}

/// `t`: [0, 6) the producer's sums, [8, 14) consumer 0's, [15] the tiles.
fn format_f8(t: &[u64]) -> String {
    let tiles = t[15].max(1);
    let side = |name: &str, labels: &[&str; 6], sums: &[u64]| {
        let per_tile: Vec<String> = labels[..5].iter().zip(sums).map(|(l, &c)| format!("{l} {}", c / tiles)).collect();
        format!("{name}: {}, {} {}", per_tile.join(", "), labels[5], sums[5])
    };
    format!("{} tiles; cycles per tile: {}; {}", t[15], side("producer", &PRODUCER, &t[0..6]), side("consumer 0", &CONSUMER, &t[8..14]))
}

/// `t`: split 0's two warpgroups, 16 slots each, every slot 1 + its cycles (mla_decode_wgmma.cuh's
/// marks: 1 prologue, 2 the wait for the tile (WG0) or for P (WG1), 9 S issued, 3 S, 4 softmax +
/// P + rescale, 5 P V, 6 the wait for the other's P V, 7 loads).
fn format_r64(t: &[u64], tiles: usize) -> String {
    let tiles = tiles.max(1) as u64;
    let side = |name: &str, w: &[u64], marks: &[(usize, &str)]| {
        let parts: Vec<String> = marks.iter().map(|&(i, l)| format!("{l} {}", w[i].saturating_sub(1) / tiles)).collect();
        format!("{name}: {}, prologue {}", parts.join(", "), w[1].saturating_sub(1))
    };
    format!(
        "{tiles} tiles; cycles per tile: {}; {}",
        side("WG0", &t[0..16], &[(2, "tile wait"), (9, "S issue"), (3, "S"), (4, "softmax + P"), (5, "P V"), (6, "free wait")]),
        side("WG1", &t[16..32], &[(2, "P wait"), (5, "P V + rescale"), (6, "free wait"), (7, "loads")])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f8_phases_are_per_tile_and_prologues_whole() {
        let mut t = vec![0u64; 16];
        t[..6].copy_from_slice(&[400, 2000, 800, 1200, 4000, 777]);
        t[8..14].copy_from_slice(&[100, 3000, 0, 1600, 300, 555]);
        t[15] = 4;
        let line = format_f8(&t);
        assert!(line.starts_with("4 tiles;"), "{line}");
        assert!(line.contains("producer: landed wait 100, S + folds 500, softmax 200, P' + arrive 300, free wait 1000, prologue 777"), "{line}");
        assert!(line.contains("consumer 0: landed arrive 25, P' wait 750, rescale 0, P V 400, loads 75, prologue 555"), "{line}");
    }

    #[test]
    fn r64_phases_drop_the_marks_offset() {
        let mut t = vec![1u64; 32];
        t[1] = 901; // prologue 900
        t[2] = 201; // 200 over 2 tiles
        t[9] = 41;
        t[16 + 5] = 1001;
        let line = format_r64(&t, 2);
        assert!(line.contains("WG0: tile wait 100, S issue 20, S 0,"), "{line}");
        assert!(line.contains("prologue 900"), "{line}");
        assert!(line.contains("WG1: P wait 0, P V + rescale 500,"), "{line}");
    }
}
