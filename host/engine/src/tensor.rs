//! Weight matrices as the CPU backend holds them: bf16 kept as stored (half the memory traffic
//! of f32, exact), everything else widened to f32.

#[derive(Debug, Clone)]
pub enum Storage {
    F32(Vec<f32>),
    Bf16(Vec<u16>),
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
        }
    }

    /// A contiguous block of rows as its own matrix (e.g. one head's slice of `kv_b_proj`).
    pub fn rows_slice(&self, start: usize, count: usize) -> Matrix {
        let range = start * self.cols..(start + count) * self.cols;
        let data = match &self.data {
            Storage::F32(d) => Storage::F32(d[range].to_vec()),
            Storage::Bf16(d) => Storage::Bf16(d[range].to_vec()),
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
        };
        Matrix { rows: self.rows, cols: count, data }
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
        }
    }
}
