//! Launcher of sampling.cu: penalties, greedy, temperature, top-k, top-p and min-p sampling of
//! f32 logits rows on the GPU, with the sampled token's logprob and up to 20 top logprobs.
//!
//! The semantics are those of `mlahost_engine::sampling` (see the header of sampling.cu): the
//! penalized row is what is sampled from; the reported logprobs are `log_softmax` of the raw
//! row (before penalties and temperature), as the engine loop reports them. Each row's random
//! number comes from the host (`SampleBatch::push_row` draws it from the request's `Rng`, only
//! for rows that are not greedy, as `sample` does), so seeded requests stay reproducible.

use super::{ensure, View};
use crate::gpu::Pod;
use crate::module::{Arg, Kernels};
use crate::{CudaError, Result};
use mlahost_engine::sampling::{Rng, SamplingParams};
use std::collections::BTreeMap;

/// Top logprobs per row the kernel can return (the output rows are this wide).
pub const MAX_TOP_LOGPROBS: usize = 20;
/// Threads per row (one block per row).
const THREADS: u32 = 1024;

/// One row's sampling parameters, as the kernel reads them (`SampleParams` in sampling.cu).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 disables the top-k cut (so does any value >= the vocabulary).
    pub top_k: i32,
    /// 1 disables nucleus sampling.
    pub top_p: f32,
    /// 0 disables the min-p cut.
    pub min_p: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// 1 disables it.
    pub repetition_penalty: f32,
    /// Uniform in [0, 1): where the inverse CDF is read.
    pub u: f32,
    /// Top logprobs wanted, 0..=20.
    pub n_logprobs: i32,
    /// This row's entries in the flat penalty list: `[penalty_offset, + penalty_count)`.
    pub penalty_offset: i32,
    pub penalty_count: i32,
    /// This row's allow-set in the flat mask list (-1: every token allowed).
    pub mask_row: i32,
}

impl Default for RowParams {
    /// Greedy, no cuts, no penalties, no top logprobs.
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            u: 0.0,
            n_logprobs: 0,
            penalty_offset: 0,
            penalty_count: 0,
            mask_row: -1,
        }
    }
}

impl Pod for RowParams {}

/// One distinct token seen in a row's prompt or output (`PenaltyEntry` in sampling.cu): the
/// repetition penalty applies to every entry, presence and frequency to those with
/// `output_count > 0`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PenaltyEntry {
    pub token: i32,
    /// Occurrences among the generated tokens (0: seen in the prompt only).
    pub output_count: i32,
}

impl Pod for PenaltyEntry {}

const _: () = assert!(std::mem::size_of::<RowParams>() == 48);
const _: () = assert!(std::mem::size_of::<PenaltyEntry>() == 8);

/// The host side of one launch: a `RowParams` per row, the flat penalty list and the masked
/// rows' allow-sets (32-bit words, `mask_words` per masked row).
#[derive(Debug, Clone, Default)]
pub struct SampleBatch {
    pub params: Vec<RowParams>,
    pub penalties: Vec<PenaltyEntry>,
    pub masks: Vec<u32>,
    pub mask_words: usize,
}

impl SampleBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn rows(&self) -> usize {
        self.params.len()
    }

    /// Adds a greedy row whose result the caller discards (a row sampled on the host); draws
    /// nothing.
    pub fn push_placeholder(&mut self) {
        self.params.push(RowParams { penalty_offset: self.penalties.len().min(i32::MAX as usize) as i32, ..RowParams::default() });
    }

    /// Adds a row for a sequence with these parameters, prompt and generated tokens, wanting
    /// `top_logprobs` alternatives. Draws the row's uniform number from `rng` when the row is
    /// sampled (not greedy), exactly when the CPU's `sample` would draw one. A request with
    /// logits processors is refused: the kernel has none, its row is sampled on the host.
    /// `allowed` (a bitset of 64-bit words over the vocabulary) restricts the row's choice;
    /// every masked row of a batch must have the same number of words.
    pub fn push_row(&mut self, p: &SamplingParams, prompt: &[u32], output: &[u32], top_logprobs: usize, rng: &mut Rng, allowed: Option<&[u64]>) -> Result<()> {
        if top_logprobs > MAX_TOP_LOGPROBS {
            return Err(CudaError::launch("sample_rows", format!("{top_logprobs} top logprobs asked, at most {MAX_TOP_LOGPROBS}")));
        }
        // Every field, by name: a new one does not compile until the GPU sampler decides on it.
        let SamplingParams {
            temperature,
            top_p,
            top_k,
            min_p,
            seed: _, // `rng` is seeded from it when the request starts
            presence_penalty,
            frequency_penalty,
            repetition_penalty,
            // The logits processors: not in the kernel; such rows go to the host sampler
            // (`backend::sampler`), and are refused here so none is ever skipped.
            logit_bias: _,
            allowed_token_ids: _,
            bad_words: _,
            min_tokens: _,
            min_tokens_banned: _,
        } = p;
        let (temperature, top_p, top_k, min_p) = (*temperature, *top_p, *top_k, *min_p);
        let (presence_penalty, frequency_penalty, repetition_penalty) = (*presence_penalty, *frequency_penalty, *repetition_penalty);
        if p.has_logits_processors() {
            return Err(CudaError::launch("sample_rows", "a row with logits processors must be sampled on the host"));
        }
        let greedy = p.is_greedy();
        // f32 keeps 24 bits of the draw; stay below 1 after the rounding.
        let u = if greedy { 0.0 } else { (rng.next_f64() as f32).min(1.0 - f32::EPSILON / 2.0) };
        let offset = self.penalties.len();
        if p.has_penalties() {
            let mut seen = BTreeMap::<u32, i32>::new();
            for &t in output {
                *seen.entry(t).or_default() += 1;
            }
            if repetition_penalty != 1.0 {
                for &t in prompt {
                    seen.entry(t).or_default();
                }
            }
            // Ids past i32::MAX are past any vocabulary: the CPU ignores them, so do we.
            self.penalties.extend(
                seen.into_iter().filter(|(t, _)| *t <= i32::MAX as u32).map(|(t, c)| PenaltyEntry { token: t as i32, output_count: c }),
            );
        }
        let count = self.penalties.len() - offset;
        let mask_row = match allowed {
            None => -1,
            Some(words) => {
                if self.mask_words != 0 && self.mask_words != 2 * words.len() {
                    return Err(CudaError::launch("sample_rows", format!("masks of {} and {} words in one batch", self.mask_words / 2, words.len())));
                }
                self.mask_words = 2 * words.len();
                let row = self.masks.len() / self.mask_words.max(1);
                self.masks.extend(words.iter().flat_map(|&w| [w as u32, (w >> 32) as u32]));
                i32::try_from(row).map_err(|_| CudaError::launch("sample_rows", "too many masked rows"))?
            }
        };
        let to_i32 = |v: usize, what: &str| {
            i32::try_from(v).map_err(|_| CudaError::launch("sample_rows", format!("{what} {v} does not fit in i32")))
        };
        self.params.push(RowParams {
            temperature,
            top_k: top_k.min(i32::MAX as usize) as i32,
            top_p,
            min_p,
            presence_penalty,
            frequency_penalty,
            repetition_penalty,
            u,
            n_logprobs: top_logprobs as i32,
            penalty_offset: to_i32(offset, "penalty offset")?,
            penalty_count: to_i32(count, "penalty count")?,
            mask_row,
        });
        Ok(())
    }
}

/// Output buffers: `tokens [R]` i32, `token_logprobs [R]` f32, `top_ids [R, 20]` i32 and
/// `top_logprobs [R, 20]` f32 (the first `n_logprobs` of each row written, best first).
#[derive(Debug, Clone, Copy)]
pub struct SampleOut {
    pub tokens: View,
    pub token_logprobs: View,
    pub top_ids: View,
    pub top_logprobs: View,
}

/// The allow-sets of a launch: `masked_rows` rows of `words` 32-bit words on the device.
#[derive(Debug, Clone, Copy)]
pub struct Masks {
    pub bits: View,
    pub masked_rows: usize,
    pub words: usize,
}

/// What `sample_rows` reads: `logits [rows, vocab]` f32 (left unchanged), `params` (`rows` x
/// `RowParams`) and the flat `penalties` list (`n_penalties` x `PenaltyEntry`). `work` is a
/// `[rows, vocab]` f32 scratch the penalized or masked rows are written to; it may be
/// `View::NULL` when there are neither.
#[derive(Debug, Clone, Copy)]
pub struct SampleIn {
    pub logits: View,
    pub work: View,
    pub rows: usize,
    pub vocab: usize,
    pub params: View,
    pub penalties: View,
    pub n_penalties: usize,
}

/// Samples one token per row of `input`, with the rows' allow-sets (`masks`, read for rows
/// whose `mask_row` is set), into `out`.
pub fn sample_rows(k: &Kernels, input: &SampleIn, masks: &Masks, out: &SampleOut) -> Result<()> {
    const K: &str = "sample_rows";
    let SampleIn { logits, work, rows, vocab, params, penalties, n_penalties } = *input;
    ensure(K, vocab > 0 && vocab <= i32::MAX as usize, || format!("vocabulary of {vocab}"))?;
    ensure(K, rows <= i32::MAX as usize && n_penalties <= i32::MAX as usize, || format!("{rows} rows, {n_penalties} penalty entries"))?;
    ensure(K, masks.masked_rows == 0 || masks.words * 32 >= vocab, || format!("masks of {} words for a vocabulary of {vocab}", masks.words))?;
    let row_bytes = vocab * 4;
    let scratch = n_penalties > 0 || masks.masked_rows > 0;
    let work = if scratch { work.need(K, "work", rows * row_bytes)? } else { 0 };
    let penalties = if n_penalties > 0 { penalties.need(K, "penalties", n_penalties * std::mem::size_of::<PenaltyEntry>())? } else { 0 };
    let bits = if masks.masked_rows > 0 { masks.bits.need(K, "masks", masks.masked_rows * masks.words * 4)? } else { 0 };
    k.launch(K, (rows as u32, 1, 1), THREADS, 0, &[
        Arg::Ptr(logits.need(K, "logits", rows * row_bytes)?),
        Arg::Ptr(work),
        Arg::Ptr(params.need(K, "params", rows * std::mem::size_of::<RowParams>())?),
        Arg::Ptr(penalties),
        Arg::I32(n_penalties as i32),
        Arg::Ptr(bits),
        Arg::I32(if masks.masked_rows > 0 { masks.words as i32 } else { 0 }),
        Arg::I32(vocab as i32),
        Arg::Ptr(out.tokens.need(K, "tokens", rows * 4)?),
        Arg::Ptr(out.token_logprobs.need(K, "token logprobs", rows * 4)?),
        Arg::Ptr(out.top_ids.need(K, "top ids", rows * MAX_TOP_LOGPROBS * 4)?),
        Arg::Ptr(out.top_logprobs.need(K, "top logprobs", rows * MAX_TOP_LOGPROBS * 4)?),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_rows_and_penalty_lists() {
        let mut b = SampleBatch::new();
        let mut rng = Rng::seeded(5);
        let greedy = SamplingParams { temperature: 0.0, ..Default::default() };
        b.push_row(&greedy, &[1, 2], &[3], 2, &mut rng, None).unwrap();
        let pen = SamplingParams { presence_penalty: 0.5, repetition_penalty: 1.2, ..Default::default() };
        b.push_row(&pen, &[7, 3, 7], &[3, 9, 3], 0, &mut rng, None).unwrap();
        let only_output = SamplingParams { frequency_penalty: 0.1, ..Default::default() };
        b.push_row(&only_output, &[4], &[5, 5], 0, &mut rng, None).unwrap();
        assert_eq!(b.rows(), 3);
        assert_eq!((b.params[0].u, b.params[0].n_logprobs, b.params[0].penalty_count), (0.0, 2, 0));
        let e = |token, output_count| PenaltyEntry { token, output_count };
        assert_eq!(b.penalties, vec![e(3, 2), e(7, 0), e(9, 1), e(5, 2)]);
        assert_eq!((b.params[1].penalty_offset, b.params[1].penalty_count), (0, 3));
        assert_eq!((b.params[2].penalty_offset, b.params[2].penalty_count), (3, 1));
        // The draws are the CPU's: one per sampled row, in order.
        let mut r = Rng::seeded(5);
        assert_eq!(b.params[1].u, r.next_f64() as f32);
        assert!(b.params.iter().all(|p| (0.0..1.0).contains(&p.u)));
        assert!(b.push_row(&greedy, &[], &[], 21, &mut rng, None).is_err());
        // Logits processors are never silently dropped: the kernel row is refused, and a
        // placeholder draws nothing.
        let biased = SamplingParams { logit_bias: vec![(3, 1.0)], ..SamplingParams::default() };
        let before = rng.clone().next_u64();
        assert!(b.push_row(&biased, &[], &[], 0, &mut rng, None).is_err());
        b.push_placeholder();
        assert_eq!(rng.next_u64(), before);
        assert_eq!(b.params.last().map(|p| (p.temperature, p.penalty_count)), Some((0.0, 0)));
    }

    #[test]
    fn masks_pack_into_32_bit_words_per_masked_row() {
        let mut b = SampleBatch::new();
        let mut rng = Rng::seeded(1);
        let p = SamplingParams::default();
        b.push_row(&p, &[], &[], 0, &mut rng, Some(&[0x1_0000_0002, 3])).unwrap();
        b.push_row(&p, &[], &[], 0, &mut rng, None).unwrap();
        b.push_row(&p, &[], &[], 0, &mut rng, Some(&[u64::MAX, 0])).unwrap();
        assert_eq!(b.params.iter().map(|r| r.mask_row).collect::<Vec<_>>(), vec![0, -1, 1]);
        assert_eq!((b.mask_words, b.masks.clone()), (4, vec![2, 1, 3, 0, u32::MAX, u32::MAX, 0, 0]));
        assert!(b.push_row(&p, &[], &[], 0, &mut rng, Some(&[1])).is_err(), "one width per batch");
    }
}
