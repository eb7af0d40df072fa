//! The kernel sources, embedded at build time so the binary carries them (no toolkit needed).

/// A kernel family: one .cu file and the headers it includes.
pub struct Family {
    pub file: &'static str,
    pub source: &'static str,
}

macro_rules! cu {
    ($name:literal) => {
        ($name, include_str!(concat!("../../../kernels/cuda/", $name)))
    };
}

/// Every header a family may include, passed to NVRTC by name.
pub const HEADERS: &[(&str, &str)] = &[
    cu!("util.cuh"),
    cu!("moe_routing.cuh"),
    cu!("cache_write.cuh"),
    cu!("wgmma_ops.cuh"),
    cu!("mla_decode_common.cuh"),
    cu!("mla_decode_mma.cuh"),
    cu!("mla_decode_wgmma.cuh"),
    cu!("mla_decode_wgmma_pp.cuh"),
    cu!("mla_decode_wgmma_t16.cuh"),
    cu!("mla_decode_combine.cuh"),
    cu!("mla_decode_f8mma.cuh"),
    cu!("mla_decode_f8pp.cuh"),
    cu!("fp8_mma.cuh"),
];

const fn family(f: (&'static str, &'static str)) -> Family {
    Family { file: f.0, source: f.1 }
}

pub const MLA_DECODE: Family = family(cu!("mla_decode.cu"));
pub const MLA_PREFILL: Family = family(cu!("mla_prefill.cu"));
pub const NORM: Family = family(cu!("norm.cu"));
pub const ROPE: Family = family(cu!("rope.cu"));
pub const CACHE_WRITE: Family = family(cu!("cache_write.cu"));
pub const ACTIVATION: Family = family(cu!("activation.cu"));
pub const MOE: Family = family(cu!("moe.cu"));
pub const SAMPLING: Family = family(cu!("sampling.cu"));
pub const FP8_GEMM: Family = family(cu!("fp8_gemm.cu"));
pub const FP8_SKINNY: Family = family(cu!("fp8_skinny.cu"));
pub const BF16_STREAM: Family = family(cu!("bf16_stream.cu"));
pub const MOE_WGMMA: Family = family(cu!("moe_wgmma.cu"));
pub const ABSORB: Family = family(cu!("absorb.cu"));
pub const RANK_BARRIER: Family = family(cu!("rank_barrier.cu"));

pub const ALL: &[&Family] = &[&MLA_DECODE, &MLA_PREFILL, &NORM, &ROPE, &CACHE_WRITE, &ACTIVATION, &MOE, &SAMPLING, &FP8_GEMM, &FP8_SKINNY, &BF16_STREAM, &MOE_WGMMA, &ABSORB, &RANK_BARRIER];

impl Family {
    /// The integer value of `#define NAME <integer>` in the family's source (tests check the
    /// launchers' constants against the kernels').
    #[cfg(test)]
    pub(crate) fn define(&self, name: &str) -> usize {
        self.source
            .lines()
            .find_map(|l| l.strip_prefix("#define ")?.strip_prefix(name)?.strip_prefix(' ')?.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("#define {name} not found in {}", self.file))
    }
}
