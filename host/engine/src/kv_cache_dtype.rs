//! The element format of the paged latent cache, and the one encoder/decoder of each format
//! that both backends share.
//!
//! Per token per layer the cache stores `c_kv` (kv_lora_rank) then `k_pe` (qk_rope_head_dim):
//! - `F32`:  576 x f32 (the CPU's default: it computes in f32 and is the numeric reference);
//! - `Bf16`: 576 x bf16, round-to-nearest-even (the GPU's default, the model's dtype);
//! - `Fp8`:  `[kv_lora x e4m3 c_kv][ceil(kv_lora/128) x f32 scale][rope x bf16 k_pe]`, all
//!   little-endian: 512 + 16 + 128 = 656 bytes for DeepSeek shapes. One scale per token per
//!   128 channels (`max|x| / 448`, e4m3's largest finite value), so one outlier token or channel
//!   group cannot flatten the others; k_pe stays bf16 as in the fastest Hopper MLA kernels,
//!   because rope's high-frequency pairs carry position and lose most to 3 mantissa bits.

use crate::checkpoint::{bf16_to_f32, f32_to_bf16, f8e4m3_to_f32};
use crate::config::ModelConfig;
use crate::{EngineError, Result};
use std::fmt;
use std::str::FromStr;

/// Channels of c_kv that share one fp8 scale.
pub const FP8_GROUP: usize = 128;
/// Largest finite e4m3fn magnitude.
pub const E4M3_MAX: f32 = 448.0;

/// What the cache stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvCacheDtype {
    F32,
    Bf16,
    Fp8,
}

/// The `--kv-cache-dtype` choice before the backend is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvCacheDtypeArg {
    /// The model's compute dtype: f32 on the CPU, bf16 on the GPU.
    #[default]
    Auto,
    F32,
    Bf16,
    Fp8,
}

impl FromStr for KvCacheDtypeArg {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "f32" | "float32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "fp8" | "fp8_e4m3" | "e4m3" => Ok(Self::Fp8),
            _ => Err(EngineError::InvalidRequest(format!("--kv-cache-dtype {s:?}: expected auto, bf16 or fp8 (or f32 on the CPU)"))),
        }
    }
}

impl KvCacheDtypeArg {
    pub fn resolve(self, backend_is_cpu: bool) -> KvCacheDtype {
        match self {
            Self::Auto if backend_is_cpu => KvCacheDtype::F32,
            Self::Auto => KvCacheDtype::Bf16,
            Self::F32 => KvCacheDtype::F32,
            Self::Bf16 => KvCacheDtype::Bf16,
            Self::Fp8 => KvCacheDtype::Fp8,
        }
    }
}

impl fmt::Display for KvCacheDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl KvCacheDtype {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::Fp8 => "fp8_e4m3",
        }
    }

    /// Bytes of one c_kv value (scales excluded).
    pub fn c_kv_elem_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::Bf16 => 2,
            Self::Fp8 => 1,
        }
    }

    /// Bytes of one k_pe value: fp8 keeps k_pe in bf16.
    pub fn k_pe_elem_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::Bf16 | Self::Fp8 => 2,
        }
    }

    /// Bytes of the per-token scales (fp8 only).
    pub fn scale_bytes(self, kv_lora_rank: usize) -> usize {
        match self {
            Self::Fp8 => kv_lora_rank.div_ceil(FP8_GROUP) * 4,
            _ => 0,
        }
    }

    /// Stored bytes per token per layer: 2304 (f32), 1152 (bf16), 656 (fp8) for DeepSeek shapes.
    pub fn bytes_per_token_per_layer(self, cfg: &ModelConfig) -> usize {
        row_bytes(self, cfg.kv_lora_rank, cfg.qk_rope_head_dim)
    }
}

/// Stored bytes of one latent row of `kv_lora` + `rope` values.
pub fn row_bytes(dtype: KvCacheDtype, kv_lora: usize, rope: usize) -> usize {
    kv_lora * dtype.c_kv_elem_bytes() + dtype.scale_bytes(kv_lora) + rope * dtype.k_pe_elem_bytes()
}

/// Round-to-nearest-even e4m3fn, saturating at ±448; NaN maps to the NaN code.
pub fn f32_to_f8e4m3(x: f32) -> u8 {
    if x.is_nan() {
        return 0x7f;
    }
    let sign = if x.is_sign_negative() { 0x80u8 } else { 0 };
    let a = x.abs();
    let code = if a >= E4M3_MAX {
        0x7e
    } else if a < 2f32.powi(-6) {
        // Subnormals are multiples of 2^-9; code = the multiple (8 rounds up to the smallest normal).
        (a * 512.0).round_ties_even() as u32
    } else {
        let e = ((a.to_bits() >> 23) & 0xff) as i32 - 127;
        // The 3-bit mantissa, rounded; a carry into bit 3 bumps the exponent as it should.
        let m = (a * 2f32.powi(-e) * 8.0).round_ties_even() as u32 - 8;
        (((e + 7) as u32) << 3) + m
    };
    sign | code.min(0x7e) as u8
}

/// Writes one token's latent (`c_kv` of `kv_lora` values, then k_pe) in `dtype`'s byte layout.
/// `out` must be `row_bytes(dtype, kv_lora, latent.len() - kv_lora)` long.
pub fn encode_latent(dtype: KvCacheDtype, latent: &[f32], kv_lora: usize, out: &mut [u8]) {
    let (c_kv, k_pe) = latent.split_at(kv_lora);
    match dtype {
        KvCacheDtype::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(latent) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        KvCacheDtype::Bf16 => put_bf16(latent, out),
        KvCacheDtype::Fp8 => {
            let groups = kv_lora.div_ceil(FP8_GROUP);
            let (codes, rest) = out.split_at_mut(kv_lora);
            let (scales, pe) = rest.split_at_mut(groups * 4);
            for (g, (xs, cs)) in c_kv.chunks(FP8_GROUP).zip(codes.chunks_mut(FP8_GROUP)).enumerate() {
                let amax = xs.iter().fold(0f32, |m, x| m.max(x.abs()));
                // A zero group keeps scale 1: its codes are all zero either way.
                let scale = if amax > 0.0 && amax.is_finite() { amax / E4M3_MAX } else { 1.0 };
                for (c, x) in cs.iter_mut().zip(xs) {
                    *c = f32_to_f8e4m3(x / scale);
                }
                scales[g * 4..g * 4 + 4].copy_from_slice(&scale.to_le_bytes());
            }
            put_bf16(k_pe, pe);
        }
    }
}

/// Reads back what `encode_latent` wrote, as f32.
pub fn decode_latent(dtype: KvCacheDtype, bytes: &[u8], kv_lora: usize, out: &mut [f32]) {
    match dtype {
        KvCacheDtype::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        KvCacheDtype::Bf16 => get_bf16(bytes, out),
        KvCacheDtype::Fp8 => {
            let groups = kv_lora.div_ceil(FP8_GROUP);
            let (codes, rest) = bytes.split_at(kv_lora);
            let (scales, pe) = rest.split_at(groups * 4);
            let (c_kv, k_pe) = out.split_at_mut(kv_lora);
            for (g, (os, cs)) in c_kv.chunks_mut(FP8_GROUP).zip(codes.chunks(FP8_GROUP)).enumerate() {
                let s = &scales[g * 4..g * 4 + 4];
                let scale = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                for (o, &c) in os.iter_mut().zip(cs) {
                    *o = E4M3_TABLE.get()[c as usize] * scale;
                }
            }
            get_bf16(pe, k_pe);
        }
    }
}

fn put_bf16(xs: &[f32], out: &mut [u8]) {
    for (o, x) in out.chunks_exact_mut(2).zip(xs) {
        o.copy_from_slice(&f32_to_bf16(*x).to_le_bytes());
    }
}

fn get_bf16(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = bf16_to_f32(u16::from_le_bytes([b[0], b[1]]));
    }
}

/// The 256 e4m3 values, built once from the checkpoint decoder.
struct Table(std::sync::OnceLock<[f32; 256]>);

impl Table {
    fn get(&self) -> &[f32; 256] {
        self.0.get_or_init(|| std::array::from_fn(|i| f8e4m3_to_f32(i as u8)))
    }
}

static E4M3_TABLE: Table = Table(std::sync::OnceLock::new());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_finite_e4m3_code_round_trips() {
        for code in 0..=255u8 {
            let v = f8e4m3_to_f32(code);
            if v.is_nan() {
                assert_eq!(f32_to_f8e4m3(v) & 0x7f, 0x7f);
                continue;
            }
            let back = f32_to_f8e4m3(v);
            // -0 encodes as 0x80, +0 as 0x00: both decode to zero.
            assert_eq!(f8e4m3_to_f32(back), v, "code {code:#04x} -> {v} -> {back:#04x}");
            if code != 0x80 {
                assert_eq!(back, code, "code {code:#04x}");
            }
        }
    }

    #[test]
    fn e4m3_saturates_and_rounds_ties_to_even() {
        assert_eq!(f32_to_f8e4m3(1e9), 0x7e);
        assert_eq!(f32_to_f8e4m3(-500.0), 0xfe);
        assert_eq!(f32_to_f8e4m3(f32::INFINITY), 0x7e);
        assert_eq!(f32_to_f8e4m3(449.0), 0x7e);
        // 1.0 = 0x38, next 1.125 = 0x39: the midpoint 1.0625 goes to the even code 0x38,
        // the midpoint 1.1875 between 1.125 (odd) and 1.25 (0x3a) goes up.
        assert_eq!(f32_to_f8e4m3(1.0625), 0x38);
        assert_eq!(f32_to_f8e4m3(1.1875), 0x3a);
        assert_eq!(f32_to_f8e4m3(1.07), 0x39);
        // Subnormals: step 2^-9; half a step rounds to even (zero), 1.5 steps to 2.
        assert_eq!(f32_to_f8e4m3(2f32.powi(-10)), 0x00);
        assert_eq!(f32_to_f8e4m3(1.5 * 2f32.powi(-9)), 0x02);
        // The largest subnormal rounds up into the smallest normal.
        assert_eq!(f32_to_f8e4m3(7.5 * 2f32.powi(-9)), 0x08);
        // A mantissa carry bumps the exponent: 1.9375 is the midpoint of 1.875 (0x3f) and 2.
        assert_eq!(f32_to_f8e4m3(1.9375), 0x40);
        assert_eq!(f32_to_f8e4m3(-1.0), 0xb8);
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even mantissa (1.0).
        assert_eq!(f32_to_bf16(1.0 + 2f32.powi(-8)), 0x3f80);
        // 1 + 3*2^-8 is halfway between 1+2^-7 (odd) and 1+2^-6: goes up.
        assert_eq!(f32_to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        assert_eq!(f32_to_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), 0x3f81);
    }

    #[test]
    fn fp8_row_layout_and_error() {
        let (kv_lora, rope) = (512, 64);
        let latent: Vec<f32> = (0..kv_lora + rope).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let mut bytes = vec![0u8; row_bytes(KvCacheDtype::Fp8, kv_lora, rope)];
        assert_eq!(bytes.len(), 656);
        encode_latent(KvCacheDtype::Fp8, &latent, kv_lora, &mut bytes);
        let mut back = vec![0f32; kv_lora + rope];
        decode_latent(KvCacheDtype::Fp8, &bytes, kv_lora, &mut back);
        for g in 0..4 {
            let xs = &latent[g * 128..(g + 1) * 128];
            let amax = xs.iter().fold(0f32, |m, x| m.max(x.abs()));
            let scale = f32::from_le_bytes(bytes[512 + 4 * g..516 + 4 * g].try_into().unwrap());
            assert_eq!(scale, amax / 448.0);
            for (x, y) in xs.iter().zip(&back[g * 128..]) {
                // e4m3 keeps 3 mantissa bits: relative error at most 2^-4 above the subnormals.
                assert!((x - y).abs() <= x.abs() / 16.0 + scale * 2f32.powi(-9), "{x} vs {y}");
            }
        }
        for (x, y) in latent[kv_lora..].iter().zip(&back[kv_lora..]) {
            assert_eq!(*y, bf16_to_f32(f32_to_bf16(*x)), "k_pe is stored as bf16");
        }
        // A zero group decodes to zeros.
        let zeros = vec![0f32; kv_lora + rope];
        encode_latent(KvCacheDtype::Fp8, &zeros, kv_lora, &mut bytes);
        decode_latent(KvCacheDtype::Fp8, &bytes, kv_lora, &mut back);
        assert!(back.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn partial_group_and_other_dtypes_round_trip() {
        // kv_lora 64 (the tiny fixtures): one partial group of 64.
        assert_eq!(row_bytes(KvCacheDtype::Fp8, 64, 16), 64 + 4 + 32);
        let latent: Vec<f32> = (0..80).map(|i| (i as f32 - 40.0) * 0.37).collect();
        for dtype in [KvCacheDtype::F32, KvCacheDtype::Bf16, KvCacheDtype::Fp8] {
            let mut bytes = vec![0u8; row_bytes(dtype, 64, 16)];
            encode_latent(dtype, &latent, 64, &mut bytes);
            let mut back = vec![0f32; 80];
            decode_latent(dtype, &bytes, 64, &mut back);
            // Relative half-ulp, plus half an fp8 subnormal step of the group's scale.
            let (rel, abs) = match dtype {
                KvCacheDtype::F32 => (0.0, 0.0),
                KvCacheDtype::Bf16 => (1.0 / 256.0, 0.0),
                KvCacheDtype::Fp8 => (1.0 / 16.0, 1e-3),
            };
            for (x, y) in latent.iter().zip(&back) {
                assert!((x - y).abs() <= x.abs() * rel + abs, "{dtype}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn parses_the_flag() {
        assert_eq!("auto".parse::<KvCacheDtypeArg>().unwrap().resolve(true), KvCacheDtype::F32);
        assert_eq!("auto".parse::<KvCacheDtypeArg>().unwrap().resolve(false), KvCacheDtype::Bf16);
        assert_eq!("FP8".parse::<KvCacheDtypeArg>().unwrap().resolve(true), KvCacheDtype::Fp8);
        assert_eq!("bf16".parse::<KvCacheDtypeArg>().unwrap(), KvCacheDtypeArg::Bf16);
        let e = "int4".parse::<KvCacheDtypeArg>().unwrap_err().to_string();
        assert!(e.contains("int4") && e.contains("fp8"), "{e}");
    }
}
