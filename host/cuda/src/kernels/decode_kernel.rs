//! The tiled MLA decode kernels of mla_decode.cu by name: which one the launch rule picks, and
//! each one's rows per CTA, threads, shared memory and what it needs of the GPU (kernels/DESIGN.md).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeKernel {
    MmaR16S2,
    MmaR16,
    MmaR32,
    WgmmaR64,
    /// sm_90a, 64 rows: WgmmaR64 with the warpgroups owning alternate tiles (S, softmax and P
    /// published by the owner, P V by both), so one's softmax runs beside the other's MMAs.
    /// Checked and timed, not chosen until it measures faster.
    WgmmaPingPong,
    /// fp8 cache (656-byte entries): the mma kernels with each tile expanded to bf16 in smem.
    Fp8MmaR16S2,
    Fp8MmaR16,
    /// sm_90a, 16 rows: transposed wgmma (tokens fill M), two warpgroups on alternate tiles.
    WgmmaT16,
    /// sm_90a, fp8 cache, 64 rows: WgmmaR64 with each tile expanded to bf16 in place.
    Fp8WgmmaR64,
    /// sm_90a, fp8 cache, 16 rows: WgmmaT16, each warpgroup expanding its own stage.
    Fp8WgmmaT16,
    /// Fp8WgmmaR64 with tile t+1 expanded under tile t's P V.
    Fp8WgmmaR64Overlap,
    /// WgmmaPingPong over an fp8 cache: each owner expands its tile in place before its S,
    /// beside the other warpgroup's MMAs. Checked and timed, not chosen until it measures faster.
    Fp8WgmmaPingPong,
    /// sm_90a, fp8 cache, 64 rows, 384 threads: the math on the FP8 tensor cores (Q and P
    /// quantized to e4m3, the tile never expanded). Checked and timed, not chosen (slower).
    Fp8F8MmaR64,
    /// Fp8F8MmaR64 with the consumers scaling P into their own P' blocks; not chosen yet.
    Fp8F8MmaR64Cp,
    /// Fp8F8MmaR64 for caches with one scale per token (stored in each of the 4 slots): one S
    /// chain, one P'. The writers store a scale per 128 channels, so it is only checked (on such
    /// a cache) and timed, never chosen.
    Fp8F8MmaR64One,
    /// sm_90a, fp8 cache, 64 rows, 256 threads: the FP8 math of Fp8F8MmaR64 with the schedule of
    /// WgmmaPingPong (two warpgroups owning alternate tiles). Checked and timed, not chosen until
    /// it measures faster.
    Fp8F8MmaPingPong,
}

impl DecodeKernel {
    /// The launch rule of kernels/DESIGN.md (fp8 caches on Hopper: the 64-row wgmma kernel
    /// expanding each tile under the previous tile's P V from 64 rows, the 16-row wgmma kernel
    /// at 16; else the 16-row mma kernels). H100, batch 64: the 64-row FP8-math kernel measured
    /// 1.2x slower than the expanding one, so it is not chosen.
    pub fn choose(q_len: usize, heads: usize, hopper: bool, fp8: bool) -> Self {
        if fp8 {
            return match q_len * heads {
                r if r >= 64 && hopper => Self::Fp8WgmmaR64Overlap,
                16 if hopper => Self::Fp8WgmmaT16,
                16 => Self::Fp8MmaR16S2,
                _ => Self::Fp8MmaR16,
            };
        }
        match q_len * heads {
            r if r >= 64 && hopper => Self::WgmmaR64,
            16 if hopper => Self::WgmmaT16,
            16 => Self::MmaR16S2,
            32 => Self::MmaR32,
            _ => Self::MmaR16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::MmaR16S2 => "mla_decode_mma_r16_t32_s2",
            Self::MmaR16 => "mla_decode_mma_r16_t32",
            Self::MmaR32 => "mla_decode_mma_r32_t32",
            Self::WgmmaR64 => "mla_decode_wgmma_r64",
            Self::WgmmaPingPong => "mla_decode_wgmma_pp",
            Self::Fp8MmaR16S2 => "mla_decode_fp8_mma_r16_t32_s2",
            Self::Fp8MmaR16 => "mla_decode_fp8_mma_r16_t32",
            Self::WgmmaT16 => "mla_decode_wgmma_t16",
            Self::Fp8WgmmaR64 => "mla_decode_fp8_wgmma_r64",
            Self::Fp8WgmmaT16 => "mla_decode_fp8_wgmma_t16",
            Self::Fp8WgmmaR64Overlap => "mla_decode_fp8_wgmma_r64_ov",
            Self::Fp8WgmmaPingPong => "mla_decode_fp8_wgmma_pp",
            Self::Fp8F8MmaR64 => "mla_decode_fp8_f8mma_r64",
            Self::Fp8F8MmaR64Cp => "mla_decode_fp8_f8mma_r64_cp",
            Self::Fp8F8MmaR64One => "mla_decode_fp8_f8mma_r64_one",
            Self::Fp8F8MmaPingPong => "mla_decode_fp8_f8mma_pp",
        }
    }

    pub fn is_fp8(self) -> bool {
        matches!(self, Self::Fp8MmaR16S2 | Self::Fp8MmaR16 | Self::Fp8WgmmaR64 | Self::Fp8WgmmaT16 | Self::Fp8WgmmaR64Overlap | Self::Fp8WgmmaPingPong | Self::Fp8F8MmaR64 | Self::Fp8F8MmaR64Cp | Self::Fp8F8MmaR64One | Self::Fp8F8MmaPingPong)
    }

    /// Whether the attention math runs on the FP8 tensor cores (Q and P rounded to e4m3).
    pub fn fp8_math(self) -> bool {
        matches!(self, Self::Fp8F8MmaR64 | Self::Fp8F8MmaR64Cp | Self::Fp8F8MmaR64One | Self::Fp8F8MmaPingPong)
    }

    /// Whether the kernel needs sm_90a (wgmma).
    pub fn needs_hopper(self) -> bool {
        matches!(self, Self::WgmmaR64 | Self::WgmmaPingPong | Self::WgmmaT16 | Self::Fp8WgmmaR64 | Self::Fp8WgmmaT16 | Self::Fp8WgmmaR64Overlap | Self::Fp8WgmmaPingPong | Self::Fp8F8MmaR64 | Self::Fp8F8MmaR64Cp | Self::Fp8F8MmaR64One | Self::Fp8F8MmaPingPong)
    }

    /// Threads per CTA: 256, or 384 for the three-warpgroup FP8-math kernels.
    pub fn threads(self) -> u32 {
        if matches!(self, Self::Fp8F8MmaR64 | Self::Fp8F8MmaR64Cp | Self::Fp8F8MmaR64One) {
            384
        } else {
            256
        }
    }

    pub(crate) fn rows(self) -> usize {
        match self {
            Self::MmaR16S2 | Self::MmaR16 | Self::Fp8MmaR16S2 | Self::Fp8MmaR16 | Self::WgmmaT16 | Self::Fp8WgmmaT16 => 16,
            Self::MmaR32 => 32,
            Self::WgmmaR64 | Self::WgmmaPingPong | Self::Fp8WgmmaR64 | Self::Fp8WgmmaR64Overlap | Self::Fp8WgmmaPingPong | Self::Fp8F8MmaR64 | Self::Fp8F8MmaR64Cp | Self::Fp8F8MmaR64One | Self::Fp8F8MmaPingPong => 64,
        }
    }

    pub fn per_sm(self) -> usize {
        if matches!(self, Self::MmaR16S2 | Self::Fp8MmaR16S2) {
            2
        } else {
            1
        }
    }

    pub(crate) fn smem(self) -> usize {
        // MmaCfg in mla_decode_mma.cuh: stages of 32 tokens, 4 partial-S buffers, P, alpha/l/m
        let mma = |rows: usize, stages: usize| stages * 32 * 1168 + 16 * rows * 40 + 2 * rows * 40 + 12 * rows;
        let fp8 = |stages: usize| stages * 32 * 656 + mma(16, 1);
        match self {
            Self::Fp8MmaR16S2 => fp8(2),
            Self::Fp8MmaR16 => fp8(4),
            Self::MmaR16S2 => mma(16, 2),
            Self::MmaR16 => mma(16, 5),
            Self::MmaR32 => mma(32, 5),
            // the fp8 variant expands each tile inside the same stages; the ping-pong kernel keeps P
            // in the stages and its softmax state where WgmmaR64 keeps P
            Self::WgmmaR64 | Self::WgmmaPingPong | Self::Fp8WgmmaR64 | Self::Fp8WgmmaR64Overlap | Self::Fp8WgmmaPingPong => 3 * 73728 + 8192 + 768 + 1024,
            // WgT16Cfg: Q, one stage per warpgroup, P^T per warpgroup, reductions, column maxima
            Self::WgmmaT16 | Self::Fp8WgmmaT16 => 18432 + 2 * 73728 + 2 * 2048 + 2 * 4 * 16 * 4 + 2 * 16 * 4 + 1024,
            // F8Cfg in mla_decode_f8mma.cuh: Q (e4m3 + k_pe), 3 stages of 41 KB, P' 2 x 16 KB,
            // row scales, alpha, ratios, l, m, final factors, P' factors (+ P in bf16, 2 x 9 KB)
            Self::Fp8F8MmaR64 | Self::Fp8F8MmaR64One | Self::Fp8F8MmaPingPong => 40960 + 3 * 41984 + 32768 + 340 * 4 + 1024,
            Self::Fp8F8MmaR64Cp => 40960 + 3 * 41984 + 32768 + 340 * 4 + 2 * 64 * 144 + 1024,
        }
    }
}
