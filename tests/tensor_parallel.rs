//! Tensor parallelism on the CPU: a model split over 2 or 4 ranks (heads, MLP and shared-expert
//! widths, routed experts sliced or spread whole over the ranks, the vocabulary), each rank on
//! its own thread with its own latent cache, meeting the others at the all-reduces and the
//! logits gather, gives the logits of the whole model on fresh random prompts; layouts the
//! model cannot be split into are refused with the reason.

use mlahost_engine::cpu::{AttentionMode, CpuOptions, CpuRankGroup};
use mlahost_engine::parallel::ParallelLayout;
use mlahost_engine::sampling::{argmax, Rng};
use mlahost_engine::{Backend, CacheGeometry, KvCacheDtype, LogitsRequest, SeqChunk};
use mlahost_tests::{all_logits, backend, decode_logits_from, fresh_seed, load, max_abs_diff, pages_for, random_tokens, FIXTURES};

/// The ranks add the same products in a different order (per-rank partial sums, then the
/// all-reduce), as the absorbed and expanded attention forms do: the same bound.
const TOL: f32 = 2e-4;

fn layout(tp: usize, ep: bool) -> ParallelLayout {
    ParallelLayout { tensor_parallel: tp, data_parallel: 1, expert_parallel: ep }
}

fn options(num_pages: usize, page_size: usize) -> CpuOptions {
    CpuOptions { geometry: CacheGeometry { num_pages, page_size }, attention: AttentionMode::Auto, kv_dtype: KvCacheDtype::F32 }
}

/// A 25-token prefill, then single-token steps: every position's logits.
fn prefill_then_decode(b: &mut dyn Backend, tokens: &[u32], pages: &[u32]) -> Vec<f32> {
    let mut out = all_logits(b, &tokens[..25], 0, 25, pages);
    out.extend(decode_logits_from(b, tokens, 25, pages));
    out
}

#[test]
fn ranks_reproduce_the_whole_model_with_experts_sliced_or_spread() {
    let mut rng = Rng::seeded(fresh_seed());
    for fixture in FIXTURES {
        let model = load(fixture);
        let vocab = model.config.vocab_size;
        let tokens = random_tokens(&mut rng, 40, vocab);
        let mut whole = backend(&model, 8, 16, AttentionMode::Auto);
        let pages = pages_for(&whole, tokens.len());
        let reference = prefill_then_decode(&mut whole, &tokens, &pages);
        let whole_bytes = model.weights().expect("weights").bytes();
        for tp in [2, 4] {
            for ep in [false, true] {
                let mut group = CpuRankGroup::new(&model.config, &model.weights().expect("weights"), layout(tp, ep), options(8, 16)).expect("group");
                let bytes = group.rank_weight_bytes();
                assert!(bytes.iter().all(|&b| b < whole_bytes), "{fixture} TP={tp} EP={ep}: a rank holds {bytes:?} of {whole_bytes} bytes");
                let got = prefill_then_decode(&mut group, &tokens, &pages);
                let d = max_abs_diff(&reference, &got);
                eprintln!("{fixture} TP={tp} EP={ep}: max |delta logit| {d:.2e} over {} positions", tokens.len());
                assert!(d < TOL, "{fixture} TP={tp} EP={ep}: logits off by {d}");
                let greedy = |l: &[f32]| l.chunks(vocab).map(argmax).collect::<Vec<_>>();
                assert_eq!(greedy(&reference), greedy(&got), "{fixture} TP={tp} EP={ep}: greedy tokens differ");
            }
        }
    }
}

#[test]
fn a_ragged_batch_through_the_group_matches_the_whole_model() {
    let mut rng = Rng::seeded(fresh_seed());
    let model = load("tiny-v2");
    let vocab = model.config.vocab_size;
    let (a, b) = (random_tokens(&mut rng, 30, vocab), random_tokens(&mut rng, 12, vocab));
    let mut whole = backend(&model, 8, 16, AttentionMode::Auto);
    let mut group = CpuRankGroup::new(&model.config, &model.weights().expect("weights"), layout(2, true), options(8, 16)).expect("group");
    let (pa, pb) = (vec![0, 1], vec![4]);
    let mut outputs = Vec::new();
    for backend in [&mut whole as &mut dyn Backend, &mut group] {
        // a's prefill alone, then a's next token beside b's whole prompt in one batch
        backend.forward(&[SeqChunk { tokens: &a[..29], start_pos: 0, block_table: &pa, logits: LogitsRequest::None }]).expect("prefill");
        let batch = [
            SeqChunk { tokens: &a[29..], start_pos: 29, block_table: &pa, logits: LogitsRequest::Last },
            SeqChunk { tokens: &b, start_pos: 0, block_table: &pb, logits: LogitsRequest::All },
        ];
        let l = backend.forward(&batch).expect("batch");
        assert_eq!((l.rows[0].len(), l.rows[1].len()), (1, b.len()));
        outputs.push(l.data);
    }
    let d = max_abs_diff(&outputs[0], &outputs[1]);
    assert!(d < TOL, "ragged batch off by {d}");
}

#[test]
fn layouts_the_model_cannot_take_are_refused_with_the_reason() {
    let model = load("tiny-v2-lite");
    let refuse = |l: ParallelLayout| match CpuRankGroup::new(&model.config, &model.weights().expect("weights"), l, options(4, 16)) {
        Ok(_) => panic!("{l:?} was accepted"),
        Err(e) => e.to_string(),
    };
    // 4 heads over 3 ranks; 8 experts over 3 expert-parallel ranks fail on the heads first
    assert!(refuse(layout(3, false)).contains("4 attention heads do not split evenly"), "{}", refuse(layout(3, false)));
    assert!(refuse(layout(8, false)).contains("attention heads"));
    // 8 routed experts spread over 1 x 3 ranks
    let ep = refuse(ParallelLayout { tensor_parallel: 1, data_parallel: 3, expert_parallel: true });
    assert!(ep.contains("8 routed experts do not split evenly over 3 expert-parallel ranks"), "{ep}");
}

/// Three sequences over two steps and a third where one group has nothing to run: the first
/// prefill reaches every group, then each group in turn runs alone (the other takes part in
/// the expert exchange with no tokens). Pages: a [0, 1], c [2, 3], b [4] of 8.
fn three_steps(b: &mut dyn Backend, a: &[u32], bb: &[u32], c: &[u32]) -> Vec<f32> {
    let (pa, pb, pc) = ([0, 1], [4], [2, 3]);
    let mut out = Vec::new();
    let chunk = |tokens, start_pos, block_table, logits| SeqChunk { tokens, start_pos, block_table, logits };
    let steps: [Vec<SeqChunk<'_>>; 3] = [
        vec![chunk(&a[..29], 0, &pa[..], LogitsRequest::Last), chunk(&bb[..12], 0, &pb[..], LogitsRequest::All)],
        vec![chunk(&a[29..], 29, &pa[..], LogitsRequest::Last), chunk(c, 0, &pc[..], LogitsRequest::All)],
        vec![chunk(&bb[12..], 12, &pb[..], LogitsRequest::All)],
    ];
    for step in steps {
        let l = b.forward(&step).expect("step");
        for (i, chunk) in step.iter().enumerate() {
            let want = match chunk.logits {
                LogitsRequest::All => chunk.tokens.len(),
                _ => 1,
            };
            assert_eq!(l.rows[i].len(), want, "rows of sequence {i}");
        }
        out.extend(l.data);
    }
    out
}

#[test]
fn data_parallel_attention_groups_reproduce_the_whole_model() {
    let mut rng = Rng::seeded(fresh_seed());
    for fixture in FIXTURES {
        let model = load(fixture);
        let vocab = model.config.vocab_size;
        let (a, b, c) = (random_tokens(&mut rng, 30, vocab), random_tokens(&mut rng, 13, vocab), random_tokens(&mut rng, 20, vocab));
        let mut whole = backend(&model, 8, 16, AttentionMode::Auto);
        let reference = three_steps(&mut whole, &a, &b, &c);
        for (tp, dp, ep) in [(1, 2, true), (2, 2, true), (1, 2, false), (2, 2, false), (1, 4, true)] {
            let l = ParallelLayout { tensor_parallel: tp, data_parallel: dp, expert_parallel: ep };
            let mut ranks = CpuRankGroup::new(&model.config, &model.weights().expect("weights"), l, options(8, 16)).expect("ranks");
            assert_eq!(ranks.cache_pools(), dp);
            assert_eq!(ranks.cache_geometry().num_pages, 8, "the groups' pages add up to the pool");
            assert!(ranks.rank_cache_pages().iter().all(|&p| p == 8 / dp), "each rank stores only its group's pages");
            let got = three_steps(&mut ranks, &a, &b, &c);
            let d = max_abs_diff(&reference, &got);
            eprintln!("{fixture} TP={tp} DP={dp} EP={ep}: max |delta logit| {d:.2e}");
            assert!(d < TOL, "{fixture} TP={tp} DP={dp} EP={ep}: logits off by {d}");
        }
    }
}

#[test]
fn a_sequence_must_keep_to_one_attention_group() {
    let model = load("tiny-v2-lite");
    let l = ParallelLayout { tensor_parallel: 1, data_parallel: 2, expert_parallel: true };
    let mut ranks = CpuRankGroup::new(&model.config, &model.weights().expect("weights"), l, options(8, 16)).expect("ranks");
    let tokens: Vec<u32> = (1..30).collect();
    let err = ranks.forward(&[SeqChunk { tokens: &tokens, start_pos: 0, block_table: &[3, 4], logits: LogitsRequest::Last }]).unwrap_err();
    assert!(err.to_string().contains("span attention groups"), "{err}");
}
