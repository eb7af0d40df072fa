//! The CPU latent cache: per layer, `num_pages * page_size` slots of one token's latent
//! (c_kv after its norm, then k_pe after rope) in the configured `KvCacheDtype`. f32 rows are
//! and bf16 rows are read in place (attention widens bf16 in its dot products); fp8 rows are
//! quantized on write and dequantized once per chunk and layer into an f32 context.

use crate::batch::CacheGeometry;
use crate::kv_cache_dtype::{decode_latent, encode_latent, row_bytes, KvCacheDtype};
use super::kernels::{axpy4_bf16, axpy4_f32, axpy_bf16, axpy_f32, dot4_bf16, dot4_f32, dot_bf16, dot_f32};
use mlahost_core::PageId;

enum Slots {
    F32(Vec<f32>),
    /// `latent_dim` bf16 values per slot: the shared encoder's bytes, as little-endian u16s.
    Bf16(Vec<u16>),
    /// `row_bytes` per slot, in the dtype's byte layout.
    Encoded(Vec<u8>),
}

pub struct LatentCache {
    geometry: CacheGeometry,
    dtype: KvCacheDtype,
    kv_lora: usize,
    latent_dim: usize,
    row_bytes: usize,
    layers: Vec<Slots>,
}

/// The latents of positions `0..len` of one sequence in one layer, as f32 rows.
pub enum Context<'a> {
    /// f32 slots, read in place through the block table.
    Paged { slots: &'a [f32], block_table: &'a [PageId], page_size: usize, dim: usize },
    /// bf16 slots, read in place through the block table.
    PagedBf16 { slots: &'a [u16], block_table: &'a [PageId], page_size: usize, dim: usize },
    /// Dequantized rows in position order.
    Dense { data: Vec<f32>, dim: usize },
}

/// One cached latent row.
#[derive(Clone, Copy)]
pub enum Row<'a> {
    F32(&'a [f32]),
    Bf16(&'a [u16]),
}

impl<'a> Row<'a> {
    /// Elements `range` of the row.
    pub fn slice(self, range: std::ops::Range<usize>) -> Row<'a> {
        match self {
            Row::F32(r) => Row::F32(&r[range]),
            Row::Bf16(r) => Row::Bf16(&r[range]),
        }
    }

    /// `x · row`.
    pub fn dot(self, x: &[f32]) -> f32 {
        match self {
            Row::F32(r) => dot_f32(x, r),
            Row::Bf16(r) => dot_bf16(x, r),
        }
    }

    /// `y += alpha * row`.
    pub fn axpy(self, alpha: f32, y: &mut [f32]) {
        match self {
            Row::F32(r) => axpy_f32(alpha, r, y),
            Row::Bf16(r) => axpy_bf16(alpha, r, y),
        }
    }

    pub fn to_f32(self, out: &mut Vec<f32>) {
        match self {
            Row::F32(r) => out.extend_from_slice(r),
            Row::Bf16(r) => out.extend(r.iter().map(|&b| crate::checkpoint::bf16_to_f32(b))),
        }
    }
}

impl Context<'_> {
    /// `out[j] = q · row(j)` for positions `0..out.len()`, four rows per pass over `q` (the
    /// query's length may be a prefix of the row's).
    pub fn dots(&self, q: &[f32], out: &mut [f32]) {
        let done = out.len() / 4 * 4;
        let mut groups = out.chunks_exact_mut(4);
        for (g, o) in (&mut groups).enumerate() {
            let j = 4 * g;
            match [self.row(j), self.row(j + 1), self.row(j + 2), self.row(j + 3)] {
                [Row::F32(a), Row::F32(b), Row::F32(c), Row::F32(d)] => o.copy_from_slice(&dot4_f32(q, [a, b, c, d])),
                [Row::Bf16(a), Row::Bf16(b), Row::Bf16(c), Row::Bf16(d)] => {
                    o.copy_from_slice(&dot4_bf16(q, [a, b, c, d]))
                }
                rows => o.iter_mut().zip(rows).for_each(|(o, r)| *o = r.slice(0..q.len()).dot(q)),
            }
        }
        for (j, o) in groups.into_remainder().iter_mut().enumerate() {
            *o = self.row(done + j).slice(0..q.len()).dot(q);
        }
    }

    /// `y += Σ_j p[j] row(j)[..y.len()]` over positions `0..p.len()`, one pass over `y` per
    /// four rows.
    pub fn weighted_sum(&self, p: &[f32], y: &mut [f32]) {
        let n = y.len();
        let groups = p.chunks_exact(4);
        let rest = groups.remainder();
        for (g, w) in groups.enumerate() {
            let j = 4 * g;
            let w = [w[0], w[1], w[2], w[3]];
            match [self.row(j), self.row(j + 1), self.row(j + 2), self.row(j + 3)] {
                [Row::F32(a), Row::F32(b), Row::F32(c), Row::F32(d)] => axpy4_f32(w, [a, b, c, d], y),
                [Row::Bf16(a), Row::Bf16(b), Row::Bf16(c), Row::Bf16(d)] => axpy4_bf16(w, [a, b, c, d], y),
                rows => rows.iter().zip(w).for_each(|(r, w)| r.slice(0..n).axpy(w, y)),
            }
        }
        let done = p.len() - rest.len();
        for (j, &w) in rest.iter().enumerate() {
            self.row(done + j).slice(0..n).axpy(w, y);
        }
    }

    pub fn row(&self, pos: usize) -> Row<'_> {
        let at = |table: &[PageId], page: usize, dim: usize| (table[pos / page] as usize * page + pos % page) * dim;
        match self {
            Context::Paged { slots, block_table, page_size, dim } => {
                let o = at(block_table, *page_size, *dim);
                Row::F32(&slots[o..o + dim])
            }
            Context::PagedBf16 { slots, block_table, page_size, dim } => {
                let o = at(block_table, *page_size, *dim);
                Row::Bf16(&slots[o..o + dim])
            }
            Context::Dense { data, dim } => Row::F32(&data[pos * dim..(pos + 1) * dim]),
        }
    }
}

impl LatentCache {
    pub fn new(num_layers: usize, kv_lora: usize, latent_dim: usize, dtype: KvCacheDtype, geometry: CacheGeometry) -> Self {
        let slots = geometry.num_pages * geometry.page_size;
        let row_bytes = row_bytes(dtype, kv_lora, latent_dim - kv_lora);
        let layer = || match dtype {
            KvCacheDtype::F32 => Slots::F32(vec![0f32; slots * latent_dim]),
            KvCacheDtype::Bf16 => Slots::Bf16(vec![0u16; slots * latent_dim]),
            _ => Slots::Encoded(vec![0u8; slots * row_bytes]),
        };
        Self { geometry, dtype, kv_lora, latent_dim, row_bytes, layers: (0..num_layers).map(|_| layer()).collect() }
    }

    pub fn geometry(&self) -> CacheGeometry {
        self.geometry
    }

    pub fn dtype(&self) -> KvCacheDtype {
        self.dtype
    }

    fn slot(&self, block_table: &[PageId], pos: usize) -> usize {
        let page = block_table[pos / self.geometry.page_size] as usize;
        page * self.geometry.page_size + pos % self.geometry.page_size
    }

    /// Positions `0..len` of a sequence (block table already validated).
    pub fn context<'a>(&'a self, layer: usize, block_table: &'a [PageId], len: usize) -> Context<'a> {
        match &self.layers[layer] {
            Slots::F32(slots) => Context::Paged { slots, block_table, page_size: self.geometry.page_size, dim: self.latent_dim },
            Slots::Bf16(slots) => Context::PagedBf16 { slots, block_table, page_size: self.geometry.page_size, dim: self.latent_dim },
            Slots::Encoded(bytes) => {
                let mut data = vec![0f32; len * self.latent_dim];
                for (pos, out) in data.chunks_exact_mut(self.latent_dim).enumerate() {
                    let o = self.slot(block_table, pos) * self.row_bytes;
                    decode_latent(self.dtype, &bytes[o..o + self.row_bytes], self.kv_lora, out);
                }
                Context::Dense { data, dim: self.latent_dim }
            }
        }
    }

    pub fn write(&mut self, layer: usize, block_table: &[PageId], pos: usize, latent: &[f32]) {
        let slot = self.slot(block_table, pos);
        let (dim, rb, dtype, kv_lora) = (self.latent_dim, self.row_bytes, self.dtype, self.kv_lora);
        match &mut self.layers[layer] {
            Slots::F32(v) => v[slot * dim..(slot + 1) * dim].copy_from_slice(latent),
            Slots::Bf16(v) => {
                let mut bytes = vec![0u8; rb];
                encode_latent(dtype, latent, kv_lora, &mut bytes);
                for (d, b) in v[slot * dim..(slot + 1) * dim].iter_mut().zip(bytes.chunks_exact(2)) {
                    *d = u16::from_le_bytes([b[0], b[1]]);
                }
            }
            Slots::Encoded(b) => encode_latent(dtype, latent, kv_lora, &mut b[slot * rb..(slot + 1) * rb]),
        }
    }
}
