//! Weight matrices as the loaders hand them over: bf16 kept as stored (half the memory traffic
//! of f32, exact), FP8 kept as stored when a GPU loader asks for it (e4m3 codes with block
//! scales, which the GPU keeps as they are), everything else widened to f32.

use crate::checkpoint::dtype::f8e4m3_to_f32;

#[derive(Debug, Clone)]
pub enum Storage {
    F32(Vec<f32>),
    Bf16(Vec<u16>),
    Fp8(Fp8Data),
}

/// A `[rows, cols]` matrix in DeepSeek's block format: value = e4m3 code x the f32 scale of its
/// `block_rows x block_cols` block (`scales` row-major, `ceil(rows/br) x ceil(cols/bc)`).
#[derive(Debug, Clone, PartialEq)]
pub struct Fp8Data {
    pub codes: Vec<u8>,
    pub scales: Vec<f32>,
    pub block_rows: usize,
    pub block_cols: usize,
}

impl Fp8Data {
    fn scale_cols(&self, cols: usize) -> usize {
        cols.div_ceil(self.block_cols)
    }
}

/// A row-major `[rows, cols]` matrix; linear layers store `[out_features, in_features]`.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Storage,
}

impl Matrix {
    pub fn from_f32(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), rows * cols, "matrix data does not match its shape");
        Self { rows, cols, data: Storage::F32(data) }
    }

    /// Row `r` widened to f32.
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        let range = r * self.cols..(r + 1) * self.cols;
        match &self.data {
            Storage::F32(d) => out.copy_from_slice(&d[range]),
            Storage::Bf16(d) => {
                for (o, &b) in out.iter_mut().zip(&d[range]) {
                    *o = crate::checkpoint::dtype::bf16_to_f32(b);
                }
            }
            Storage::Fp8(f) => {
                let bc = f.scale_cols(self.cols);
                let scales = &f.scales[(r / f.block_rows) * bc..][..bc];
                for (c, (o, &q)) in out.iter_mut().zip(&f.codes[range]).enumerate() {
                    *o = f8e4m3_to_f32(q) * scales[c / f.block_cols];
                }
            }
        }
    }

    /// The same values in f32 (FP8 dequantized; exact for every storage).
    pub fn widened(&self) -> Matrix {
        Matrix::from_f32(self.rows, self.cols, self.to_f32_vec())
    }

    /// FP8 storage widened to f32; others as they are (for code that reads raw rows).
    pub fn without_fp8(self) -> Matrix {
        match self.data {
            Storage::Fp8(_) => self.widened(),
            _ => self,
        }
    }

    /// A contiguous block of rows as its own matrix (e.g. one head's slice of `kv_b_proj`).
    /// FP8 storage stays FP8 when the slice keeps whole blocks (it starts on a block edge and
    /// ends on one or at the last row); otherwise it is widened to f32.
    pub fn rows_slice(&self, start: usize, count: usize) -> Matrix {
        let range = start * self.cols..(start + count) * self.cols;
        let data = match &self.data {
            Storage::F32(d) => Storage::F32(d[range].to_vec()),
            Storage::Bf16(d) => Storage::Bf16(d[range].to_vec()),
            Storage::Fp8(f) if start % f.block_rows == 0 && (count % f.block_rows == 0 || start + count == self.rows) => {
                let bc = f.scale_cols(self.cols);
                let blocks = start / f.block_rows..(start + count).div_ceil(f.block_rows);
                Storage::Fp8(Fp8Data { codes: f.codes[range].to_vec(), scales: f.scales[blocks.start * bc..blocks.end * bc].to_vec(), ..*f })
            }
            Storage::Fp8(_) => return self.widened().rows_slice(start, count),
        };
        Matrix { rows: count, cols: self.cols, data }
    }

    /// Columns `start..start + count` of every row as their own matrix (a row-parallel shard).
    pub fn cols_slice(&self, start: usize, count: usize) -> Matrix {
        fn pick<T: Copy>(d: &[T], cols: usize, start: usize, count: usize) -> Vec<T> {
            d.chunks_exact(cols).flat_map(|row| &row[start..start + count]).copied().collect()
        }
        let data = match &self.data {
            Storage::F32(d) => Storage::F32(pick(d, self.cols, start, count)),
            Storage::Bf16(d) => Storage::Bf16(pick(d, self.cols, start, count)),
            Storage::Fp8(f) if start % f.block_cols == 0 && (count % f.block_cols == 0 || start + count == self.cols) => {
                let bc = f.scale_cols(self.cols);
                let blocks = start / f.block_cols..(start + count).div_ceil(f.block_cols);
                let scales = pick(&f.scales, bc, blocks.start, blocks.len());
                Storage::Fp8(Fp8Data { codes: pick(&f.codes, self.cols, start, count), scales, ..*f })
            }
            Storage::Fp8(_) => return self.widened().cols_slice(start, count),
        };
        Matrix { rows: self.rows, cols: count, data }
    }

    /// This matrix over `other` (same width). Two FP8 matrices with the same blocks stay FP8
    /// when this one ends on a block edge; bf16 over bf16 stays bf16; anything else is f32.
    pub fn stacked_over(self, other: Matrix) -> Matrix {
        assert_eq!(self.cols, other.cols, "stacking matrices of different widths");
        let (rows, cols) = (self.rows + other.rows, self.cols);
        let data = match (self.data, other.data) {
            (Storage::Bf16(mut x), Storage::Bf16(y)) => {
                x.extend_from_slice(&y);
                Storage::Bf16(x)
            }
            (Storage::Fp8(mut x), Storage::Fp8(y)) if self.rows % x.block_rows == 0 && (x.block_rows, x.block_cols) == (y.block_rows, y.block_cols) => {
                x.codes.extend_from_slice(&y.codes);
                x.scales.extend_from_slice(&y.scales);
                Storage::Fp8(x)
            }
            (x, y) => {
                let mut v = Matrix { rows: self.rows, cols, data: x }.to_f32_vec();
                v.extend(Matrix { rows: other.rows, cols, data: y }.to_f32_vec());
                Storage::F32(v)
            }
        };
        Matrix { rows, cols, data }
    }

    pub fn to_f32_vec(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        for r in 0..self.rows {
            self.row_into(r, &mut out[r * self.cols..(r + 1) * self.cols]);
        }
        out
    }

    pub fn bytes(&self) -> usize {
        match &self.data {
            Storage::F32(d) => d.len() * 4,
            Storage::Bf16(d) => d.len() * 2,
            Storage::Fp8(f) => f.codes.len() + f.scales.len() * 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv_cache_dtype::f32_to_f8e4m3;

    /// A 300 x 260 FP8 matrix with 128 x 128 blocks (ragged at both edges) and varied scales.
    fn fp8(rows: usize, cols: usize, seed: u64) -> Matrix {
        let mut rng = crate::sampling_params::Rng::seeded(seed);
        let codes = (0..rows * cols).map(|_| f32_to_f8e4m3((rng.next_f64() as f32 - 0.5) * 800.0)).collect();
        let scales = (0..rows.div_ceil(128) * cols.div_ceil(128)).map(|i| 10f32.powi(i as i32 % 5 - 2)).collect();
        Matrix { rows, cols, data: Storage::Fp8(Fp8Data { codes, scales, block_rows: 128, block_cols: 128 }) }
    }

    #[test]
    fn fp8_slices_and_stacks_keep_their_values_and_blocks_where_they_can() {
        let m = fp8(300, 260, 7);
        let whole = m.to_f32_vec();
        let at = |r: usize, c: usize| whole[r * 260 + c];
        for (start, count, stays_fp8) in [(128, 172, true), (0, 256, true), (128, 128, true), (100, 50, false)] {
            let s = m.rows_slice(start, count);
            assert_eq!(matches!(s.data, Storage::Fp8(_)), stays_fp8, "rows {start}+{count}");
            let v = s.to_f32_vec();
            assert!((0..count).all(|r| (0..260).all(|c| v[r * 260 + c] == at(start + r, c))), "rows {start}+{count}");
        }
        for (start, count, stays_fp8) in [(128, 132, true), (0, 128, true), (64, 64, false)] {
            let s = m.cols_slice(start, count);
            assert_eq!(matches!(s.data, Storage::Fp8(_)), stays_fp8, "cols {start}+{count}");
            let v = s.to_f32_vec();
            assert!((0..300).all(|r| (0..count).all(|c| v[r * count + c] == at(r, start + c))), "cols {start}+{count}");
        }
        let (top, bottom) = (fp8(256, 260, 1), fp8(44, 260, 2));
        let expect: Vec<f32> = top.to_f32_vec().into_iter().chain(bottom.to_f32_vec()).collect();
        let stacked = top.clone().stacked_over(bottom.clone());
        assert!(matches!(stacked.data, Storage::Fp8(_)));
        assert_eq!(stacked.to_f32_vec(), expect);
        let ragged = bottom.clone().stacked_over(top.clone());
        assert!(matches!(ragged.data, Storage::F32(_)), "a stack off a block edge is widened");
        assert_eq!(ragged.rows, 300);
        assert_eq!(m.bytes(), 300 * 260 + 3 * 3 * 4);
    }
}
