//! The CPU latent cache: per layer, `num_pages * page_size` slots of `kv_lora + rope` f32
//! values (c_kv after its norm, then k_pe after rope).

use crate::batch::CacheGeometry;
use mlahost_core::PageId;

pub struct LatentCache {
    geometry: CacheGeometry,
    latent_dim: usize,
    layers: Vec<Vec<f32>>,
}

impl LatentCache {
    pub fn new(num_layers: usize, latent_dim: usize, geometry: CacheGeometry) -> Self {
        let per_layer = geometry.num_pages * geometry.page_size * latent_dim;
        Self { geometry, latent_dim, layers: (0..num_layers).map(|_| vec![0f32; per_layer]).collect() }
    }

    pub fn geometry(&self) -> CacheGeometry {
        self.geometry
    }

    fn offset(&self, block_table: &[PageId], pos: usize) -> usize {
        let page = block_table[pos / self.geometry.page_size] as usize;
        (page * self.geometry.page_size + pos % self.geometry.page_size) * self.latent_dim
    }

    /// The cached latent of position `pos` (block table already validated).
    pub fn read(&self, layer: usize, block_table: &[PageId], pos: usize) -> &[f32] {
        let o = self.offset(block_table, pos);
        &self.layers[layer][o..o + self.latent_dim]
    }

    pub fn write(&mut self, layer: usize, block_table: &[PageId], pos: usize, latent: &[f32]) {
        let o = self.offset(block_table, pos);
        self.layers[layer][o..o + self.latent_dim].copy_from_slice(latent);
    }
}
