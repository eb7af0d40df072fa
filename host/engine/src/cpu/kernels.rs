//! Vector inner loops of the CPU backend (attention's row dots and axpys, the sampler's
//! log-sum-exp). Written so LLVM
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

/// Four rows against one vector: eight independent accumulator chains, the vector read once
/// per four rows.
#[inline(always)]
fn dot4_body<const FMA: bool, T: Copy>(a: &[f32], rows: [&[T]; 4], widen: impl Fn(T) -> f32) -> [f32; 4] {
    let n = a.len();
    let [r0, r1, r2, r3] = rows.map(|r| &r[..n]);
    let mut acc = [[0f32; LANES]; 4];
    let chunks = a.chunks_exact(LANES).zip(r0.chunks_exact(LANES)).zip(r1.chunks_exact(LANES));
    for (((x, y0), y1), (y2, y3)) in chunks.zip(r2.chunks_exact(LANES).zip(r3.chunks_exact(LANES))) {
        for i in 0..LANES {
            acc[0][i] = madd::<FMA>(x[i], widen(y0[i]), acc[0][i]);
            acc[1][i] = madd::<FMA>(x[i], widen(y1[i]), acc[1][i]);
            acc[2][i] = madd::<FMA>(x[i], widen(y2[i]), acc[2][i]);
            acc[3][i] = madd::<FMA>(x[i], widen(y3[i]), acc[3][i]);
        }
    }
    let done = n / LANES * LANES;
    let mut out = [0f32; 4];
    for (k, row) in [r0, r1, r2, r3].into_iter().enumerate() {
        let tail = (done..n).fold(0f32, |t, i| madd::<FMA>(a[i], widen(row[i]), t));
        out[k] = acc[k].iter().sum::<f32>() + tail;
    }
    out
}

/// `y += Σ p[k] rows[k]`: one pass over `y` for four rows.
#[inline(always)]
fn axpy4_body<const FMA: bool, T: Copy>(p: [f32; 4], rows: [&[T]; 4], y: &mut [f32], widen: impl Fn(T) -> f32) {
    let n = y.len();
    let [r0, r1, r2, r3] = rows.map(|r| &r[..n]);
    for ((((yi, &x0), &x1), &x2), &x3) in y.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
        let v = madd::<FMA>(p[0], widen(x0), *yi);
        let v = madd::<FMA>(p[1], widen(x1), v);
        let v = madd::<FMA>(p[2], widen(x2), v);
        *yi = madd::<FMA>(p[3], widen(x3), v);
    }
}

#[inline(always)]
fn dot4_f32_body<const FMA: bool>(a: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
    dot4_body::<FMA, f32>(a, rows, |x| x)
}

#[inline(always)]
fn dot4_bf16_body<const FMA: bool>(a: &[f32], rows: [&[u16]; 4]) -> [f32; 4] {
    dot4_body::<FMA, u16>(a, rows, bf16_to_f32)
}

#[inline(always)]
fn axpy4_f32_body<const FMA: bool>(p: [f32; 4], rows: [&[f32]; 4], y: &mut [f32]) {
    axpy4_body::<FMA, f32>(p, rows, y, |x| x)
}

#[inline(always)]
fn axpy4_bf16_body<const FMA: bool>(p: [f32; 4], rows: [&[u16]; 4], y: &mut [f32]) {
    axpy4_body::<FMA, u16>(p, rows, y, bf16_to_f32)
}

/// `e^x` for `x <= 0` in branch-free f32 arithmetic that vectorizes (Cephes' expf polynomial,
/// within 2 ulp); `x < -87` (and -inf) gives 0.
#[inline(always)]
fn exp_nonpositive<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.max(-87.0);
    let n = madd::<FMA>(xc, LOG2E, 0.5).floor();
    let r = madd::<FMA>(-n, LN2_LO, madd::<FMA>(-n, LN2_HI, xc));
    let mut p = 1.987_569_1e-4;
    for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.500_000_01] {
        p = madd::<FMA>(p, r, c);
    }
    let y = madd::<FMA>(p, r * r, r + 1.0);
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.0 { 0.0 } else { y * scale }
}

/// `Σ e^(x_i - shift)` for `shift >= max x`, each term in f32, summed in f64.
#[inline(always)]
fn sum_exp_body<const FMA: bool>(x: &[f32], shift: f32) -> f64 {
    const W: usize = 8;
    let mut acc = [0f64; W];
    let chunks = x.chunks_exact(W);
    let tail: f64 = chunks.remainder().iter().map(|&v| exp_nonpositive::<FMA>(v - shift) as f64).sum();
    for c in chunks {
        for i in 0..W {
            acc[i] += exp_nonpositive::<FMA>(c[i] - shift) as f64;
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// The largest element (NaNs ignored; -inf for none).
#[inline(always)]
fn max_f32_body<const FMA: bool>(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    for c in chunks {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    acc.iter().fold(tail, |m, &v| if v > m { v } else { m })
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

dispatch!(
    /// `[a · rows[k]]` for four rows.
    dot4_f32, dot4_f32_body, (a: &[f32], rows: [&[f32]; 4]) -> [f32; 4]
);
dispatch!(
    /// `[a · widen(rows[k])]` for four bf16 rows.
    dot4_bf16, dot4_bf16_body, (a: &[f32], rows: [&[u16]; 4]) -> [f32; 4]
);
dispatch!(
    /// `y += Σ p[k] rows[k]`.
    axpy4_f32, axpy4_f32_body, (p: [f32; 4], rows: [&[f32]; 4], y: &mut [f32]) -> ()
);
dispatch!(
    /// `y += Σ p[k] widen(rows[k])` for bf16 rows.
    axpy4_bf16, axpy4_bf16_body, (p: [f32; 4], rows: [&[u16]; 4], y: &mut [f32]) -> ()
);
dispatch!(
    /// `Σ e^(x_i - shift)` for `shift >= max x` (the log-sum-exp's sum).
    sum_exp, sum_exp_body, (x: &[f32], shift: f32) -> f64
);
dispatch!(
    /// The largest element (NaNs ignored; -inf for none).
    max_f32, max_f32_body, (x: &[f32]) -> f32
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

    #[test]
    fn four_row_kernels_match_one_row_kernels() {
        for n in [1, 16, 17, 100, 576] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let rows: Vec<Vec<f32>> = (0..4).map(|k| (0..n).map(|i| ((i * (k + 2)) as f32 * 0.11).cos()).collect()).collect();
            let rows_bf: Vec<Vec<u16>> = rows.iter().map(|r| r.iter().map(|&x| crate::checkpoint::f32_to_bf16(x)).collect()).collect();
            let r4 = [&rows[0][..], &rows[1][..], &rows[2][..], &rows[3][..]];
            let b4 = [&rows_bf[0][..], &rows_bf[1][..], &rows_bf[2][..], &rows_bf[3][..]];
            let (d, db) = (dot4_f32(&a, r4), dot4_bf16(&a, b4));
            for k in 0..4 {
                assert!((d[k] - dot_f32(&a, r4[k])).abs() < 1e-4, "n {n} row {k}");
                assert!((db[k] - dot_bf16(&a, b4[k])).abs() < 1e-4, "n {n} row {k}");
            }
            let p = [0.5, -1.0, 2.0, 0.25];
            let (mut y4, mut y4b, mut y1, mut y1b) = (vec![1f32; n], vec![1f32; n], vec![1f32; n], vec![1f32; n]);
            axpy4_f32(p, r4, &mut y4);
            axpy4_bf16(p, b4, &mut y4b);
            for k in 0..4 {
                axpy_f32(p[k], r4[k], &mut y1);
                axpy_bf16(p[k], b4[k], &mut y1b);
            }
            for i in 0..n {
                assert!((y4[i] - y1[i]).abs() < 1e-5 && (y4b[i] - y1b[i]).abs() < 1e-5, "n {n} i {i}");
            }
        }
    }

    #[test]
    fn exp_sum_and_max_match_libm() {
        let x: Vec<f32> = (0..1000).map(|i| -((i * 7919 % 1000) as f32) * 0.1).chain([f32::NEG_INFINITY, -87.5, -86.9, 0.0]).collect();
        for &v in &x {
            let (ours, libm) = (exp_nonpositive::<false>(v), v.exp());
            let bound = if v < -87.0 { 0.0 } else { 3.0 * f32::EPSILON * libm };
            assert!(ours == 0.0 || (ours - libm).abs() <= bound, "e^{v}: {ours} vs {libm}");
            assert!(v >= -87.0 || ours == 0.0, "e^{v} flushes to 0");
        }
        let naive: f64 = x.iter().map(|&v| (v as f64 - 0.5).exp()).sum();
        assert!((sum_exp(&x, 0.5) / naive - 1.0).abs() < 1e-6);
        assert_eq!(max_f32(&x), 0.0);
        assert_eq!(max_f32(&[f32::NAN, -3.0, f32::NAN]), -3.0);
        assert_eq!(max_f32(&[]), f32::NEG_INFINITY);
    }
}
