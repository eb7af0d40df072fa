//! Sampling on the device after a forward pass: the logits rows stay on the GPU and only the
//! tokens and the requested logprobs come back (4 + 8 * 21 bytes per row instead of 4 * vocab).
//!
//! A row whose request has logits processors (`logit_bias`, `allowed_token_ids`, `bad_words`,
//! `min_tokens`) is the exception: the kernel has none of them, so that row alone is copied to
//! the host and sampled by the engine's host sampler (`logits_processors::sample_row`, what the
//! CPU engine runs), drawing from the request's generator as the CPU would. The kernel still
//! runs over it as a greedy placeholder and its result is discarded.

use crate::gpu::{DeviceBuffer, Gpu};
use crate::kernels::sampling::{sample_rows, Masks, PenaltyEntry, RowParams, SampleBatch, SampleIn, SampleOut, MAX_TOP_LOGPROBS};
use crate::kernels::View;
use crate::module::Kernels;
use crate::Result;
use mlahost_engine::logits_processors::sample_row;
use mlahost_engine::{DeviceSample, SampleRequest};
use std::sync::Arc;

/// Buffers of the sampler, grown (to the next power of two) as batches need.
#[derive(Default)]
pub struct SamplerBuffers {
    rows: usize,
    penalties: usize,
    vocab: usize,
    bufs: Option<[DeviceBuffer; 8]>,
}

impl SamplerBuffers {
    fn ensure(&mut self, gpu: &Arc<Gpu>, rows: usize, penalties: usize, vocab: usize) -> Result<()> {
        if self.bufs.is_some() && rows <= self.rows && penalties <= self.penalties && vocab == self.vocab {
            return Ok(());
        }
        let (rows, penalties) = (rows.next_power_of_two().max(self.rows), penalties.next_power_of_two().max(self.penalties).max(1));
        self.bufs = None;
        let a = |bytes: usize| DeviceBuffer::alloc(gpu, bytes.max(16));
        self.bufs = Some([
            a(rows * std::mem::size_of::<RowParams>())?,
            a(penalties * std::mem::size_of::<PenaltyEntry>())?,
            a(rows * vocab * 4)?, // penalized rows
            a(rows * 4)?,
            a(rows * 4)?,
            a(rows * MAX_TOP_LOGPROBS * 4)?,
            a(rows * MAX_TOP_LOGPROBS * 4)?,
            a(rows * vocab.div_ceil(64) * 8)?, // allow-sets of masked rows
        ]);
        (self.rows, self.penalties, self.vocab) = (rows, penalties, vocab);
        Ok(())
    }

    /// Samples `requests.len()` rows of `logits` (`[rows, vocab]` f32 on the device).
    pub fn sample(&mut self, k: &Kernels, logits_buf: &DeviceBuffer, vocab: usize, requests: &mut [SampleRequest<'_>]) -> Result<Vec<DeviceSample>> {
        let logits = View::of(logits_buf);
        let mut batch = SampleBatch::new();
        // A pending allow-set (a grammar plugin still computing it while the forward pass ran)
        // is waited for here, after the forward's launches.
        if let Some(w) = requests.iter().filter_map(|r| r.allowed.get()).find(|w| w.len() != vocab.div_ceil(64)) {
            return Err(crate::CudaError::launch("sample_rows", format!("an allow-set of {} words for a vocabulary of {vocab}", w.len())));
        }
        let on_host: Vec<bool> = requests.iter().map(|r| r.params.has_logits_processors()).collect();
        for (r, &host) in requests.iter_mut().zip(&on_host) {
            if host {
                batch.push_placeholder();
            } else {
                batch.push_row(r.params, r.prompt, r.output, r.top_logprobs, r.rng, r.allowed.get())?;
            }
        }
        let rows = batch.rows();
        self.ensure(k.gpu(), rows, batch.penalties.len(), vocab)?;
        let Some([params, penalties, work, tokens, lps, top_ids, top_lps, mask_bits]) = &self.bufs else {
            return Err(crate::CudaError::launch("sample_rows", "sampler buffers missing"));
        };
        params.write(0, &batch.params)?;
        penalties.write(0, &batch.penalties)?;
        let masked_rows = batch.params.iter().filter(|p| p.mask_row >= 0).count();
        if masked_rows > 0 {
            mask_bits.write(0, &batch.masks)?;
        }
        let masks = Masks { bits: View::of(mask_bits), masked_rows, words: batch.mask_words };
        let out = SampleOut {
            tokens: View::of(tokens),
            token_logprobs: View::of(lps),
            top_ids: View::of(top_ids),
            top_logprobs: View::of(top_lps),
        };
        let input = SampleIn {
            logits,
            work: View::of(work),
            rows,
            vocab,
            params: View::of(params),
            penalties: View::of(penalties),
            n_penalties: batch.penalties.len(),
        };
        sample_rows(k, &input, &masks, &out)?;
        let ids: Vec<i32> = tokens.to_vec(rows)?;
        let lp: Vec<f32> = lps.to_vec(rows)?;
        let tids: Vec<i32> = top_ids.to_vec(rows * MAX_TOP_LOGPROBS)?;
        let tlps: Vec<f32> = top_lps.to_vec(rows * MAX_TOP_LOGPROBS)?;
        let mut host_row = Vec::new();
        let mut out = Vec::with_capacity(rows);
        for (r, req) in requests.iter_mut().enumerate() {
            let n = req.top_logprobs;
            if on_host[r] {
                host_row.resize(vocab, 0f32);
                logits_buf.read(r * vocab * 4, &mut host_row)?;
                let sample = sample_row(&host_row, req.prompt, req.output, req.params, req.allowed.get(), n, req.rng);
                out.push(DeviceSample { token: sample.token, logprob: sample.logprob, top: sample.top });
                continue;
            }
            out.push(DeviceSample {
                token: ids[r] as u32,
                logprob: lp[r],
                top: (0..n).map(|j| (tids[r * MAX_TOP_LOGPROBS + j] as u32, tlps[r * MAX_TOP_LOGPROBS + j])).collect(),
            });
        }
        Ok(out)
    }
}
