//! Which instruction set the CPU kernels use, chosen once at run time from the CPU's features
//! (AVX-512 over AVX2+FMA over portable code), and overridable for tests and A/B runs.

use crate::{EngineError, Result};
use std::sync::atomic::{AtomicU8, Ordering};

/// A kernel family. Every family computes each output as a sum of exact f32 products
/// (bf16 widens to f32 exactly) accumulated in f32; they differ only in summation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust (what LLVM makes of it for the build's baseline target).
    Scalar = 1,
    /// AVX2 + FMA, eight lanes.
    Avx2 = 2,
    /// AVX-512 F/BW, sixteen lanes, bf16 weights widened in registers (shift and mask).
    Avx512 = 3,
}

/// 0: not chosen yet.
static ACTIVE: AtomicU8 = AtomicU8::new(0);

impl Isa {
    pub fn as_str(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run the family.
    pub fn supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") && Isa::Avx2.supported()
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The fastest family this CPU runs.
    pub fn best() -> Isa {
        [Isa::Avx512, Isa::Avx2].into_iter().find(|i| i.supported()).unwrap_or(Isa::Scalar)
    }

    /// The family the kernels use now: `set_kernel_isa`'s choice, else `best()`.
    #[inline]
    pub fn active() -> Isa {
        match ACTIVE.load(Ordering::Relaxed) {
            1 => Isa::Scalar,
            2 => Isa::Avx2,
            3 => Isa::Avx512,
            _ => {
                let best = Isa::best();
                ACTIVE.store(best as u8, Ordering::Relaxed);
                best
            }
        }
    }
}

impl std::str::FromStr for Isa {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Ok(Isa::Scalar),
            "avx2" => Ok(Isa::Avx2),
            "avx512" => Ok(Isa::Avx512),
            _ => Err(EngineError::InvalidRequest(format!("CPU kernels {s:?}: expected scalar, avx2 or avx512"))),
        }
    }
}

/// Makes every CPU kernel of this process use `isa` (for A/B runs and tests of one path);
/// refused when the CPU lacks it. Call it before a forward pass, not during one.
pub fn set_kernel_isa(isa: Isa) -> Result<()> {
    if !isa.supported() {
        return Err(EngineError::InvalidRequest(format!("this CPU cannot run the {} kernels", isa.as_str())));
    }
    ACTIVE.store(isa as u8, Ordering::Relaxed);
    Ok(())
}
