//! Vector inner loops of the CPU backend (attention's row dots and axpys). Written so LLVM
//! vectorizes them, and compiled twice on x86-64: once for the baseline target and once with
//! AVX2+FMA, chosen at run time.

use crate::checkpoint::bf16_to_f32;

const LANES: usize = 16;

/// `a * b + c`, fused only where the build has FMA (the slow software fallback is avoided).
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

#[inline(always)]
fn dot_f32_body<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] = madd::<FMA>(x[i], y[i], acc[i]);
        }
    }
    let mut tail = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail = madd::<FMA>(*x, *y, tail);
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn dot_bf16_body<const FMA: bool>(a: &[f32], b: &[u16]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] = madd::<FMA>(x[i], bf16_to_f32(y[i]), acc[i]);
        }
    }
    let mut tail = 0f32;
    for (x, &y) in ra.iter().zip(rb) {
        tail = madd::<FMA>(*x, bf16_to_f32(y), tail);
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn axpy_f32_body<const FMA: bool>(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = madd::<FMA>(alpha, *xi, *yi);
    }
}

#[inline(always)]
fn axpy_bf16_body<const FMA: bool>(alpha: f32, x: &[u16], y: &mut [f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = madd::<FMA>(alpha, bf16_to_f32(xi), *yi);
    }
}

macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident, $body:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        $(#[$doc])*
        #[inline]
        pub fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn wide($($arg: $ty),*) -> $ret {
                    $body::<true>($($arg),*)
                }
                if has_avx2() {
                    // SAFETY: the CPU supports AVX2 and FMA (checked at run time just above).
                    return unsafe { wide($($arg),*) };
                }
            }
            $body::<false>($($arg),*)
        }
    };
}

dispatch!(
    /// `a · b`.
    dot_f32, dot_f32_body, (a: &[f32], b: &[f32]) -> f32
);
dispatch!(
    /// `a · widen(b)` for a bf16 row.
    dot_bf16, dot_bf16_body, (a: &[f32], b: &[u16]) -> f32
);
dispatch!(
    /// `y += alpha * x`.
    axpy_f32, axpy_f32_body, (alpha: f32, x: &[f32], y: &mut [f32]) -> ()
);
dispatch!(
    /// `y += alpha * widen(x)` for a bf16 row.
    axpy_bf16, axpy_bf16_body, (alpha: f32, x: &[u16], y: &mut [f32]) -> ()
);

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2() -> bool {
    // The active family is always one the CPU supports, and AVX-512 implies AVX2+FMA.
    super::isa::Isa::active() >= super::isa::Isa::Avx2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_match_naive_sums() {
        for n in [0, 1, 15, 16, 17, 100] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let bb: Vec<u16> = b.iter().map(|&x| crate::checkpoint::f32_to_bf16(x)).collect();
            let naive: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot_f32(&a, &b) as f64 - naive).abs() < 1e-4);
            let naive_bf: f64 = a.iter().zip(&bb).map(|(x, &y)| *x as f64 * bf16_to_f32(y) as f64).sum();
            assert!((dot_bf16(&a, &bb) as f64 - naive_bf).abs() < 1e-4);
            let mut y = vec![1.0; n];
            axpy_bf16(2.0, &bb, &mut y);
            for i in 0..n {
                assert!((y[i] - (1.0 + 2.0 * bf16_to_f32(bb[i]))).abs() < 1e-6);
            }
        }
    }
}
