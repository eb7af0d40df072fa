//! Properties of the CPU engine on fresh random prompts: both attention forms agree, results
//! do not depend on page size, physical page order or chunking, and a ragged batch gives each
//! sequence what it gets alone.

use mlahost_engine::cpu::AttentionMode;
use mlahost_engine::sampling::Rng;
use mlahost_engine::{Backend, LogitsRequest, RoutingTrace, SeqChunk};
use mlahost_tests::{all_logits, backend, decode_logits_from, fresh_seed, load, max_abs_diff, pages_for, random_tokens, FIXTURES};

/// f32 sums in a different order (absorbed vs expanded, batch shapes): logits are O(10).
const TOL: f32 = 2e-4;

#[test]
fn absorbed_and_unabsorbed_attention_agree() {
    let mut rng = Rng::seeded(fresh_seed());
    for fixture in FIXTURES {
        let model = load(fixture);
        let tokens = random_tokens(&mut rng, 45, model.config.vocab_size);
        let mut results = Vec::new();
        for mode in [AttentionMode::Absorbed, AttentionMode::Unabsorbed, AttentionMode::Auto] {
            let mut b = backend(&model, 8, 16, mode);
            let pages = pages_for(&b, tokens.len());
            // A 30-token prefill and then single-token steps exercise both shapes of chunk.
            let mut logits = all_logits(&mut b, &tokens[..30], 0, 30, &pages);
            let rest = decode_logits_from(&mut b, &tokens, 30, &pages);
            logits.extend(rest);
            results.push(logits);
        }
        let d1 = max_abs_diff(&results[0], &results[1]);
        let d2 = max_abs_diff(&results[0], &results[2]);
        assert!(d1 < TOL && d2 < TOL, "{fixture}: absorbed vs unabsorbed {d1}, vs auto {d2}");
    }
}

#[test]
fn page_size_page_order_and_chunking_do_not_matter() {
    let mut rng = Rng::seeded(fresh_seed());
    for fixture in FIXTURES {
        let model = load(fixture);
        let tokens = random_tokens(&mut rng, 70, model.config.vocab_size);
        let mut reference = None;
        for page_size in [1, 16, 64] {
            let pages_needed = tokens.len().div_ceil(page_size);
            let mut b = backend(&model, pages_needed * 2, page_size, AttentionMode::Auto);
            let mut pages = pages_for(&b, 2 * pages_needed * page_size);
            // Shuffle the physical pages and keep only as many as the sequence needs.
            for i in (1..pages.len()).rev() {
                pages.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
            }
            pages.truncate(pages_needed);
            for chunk in [70, 23, 1] {
                let logits = all_logits(&mut b, &tokens, 0, chunk, &pages);
                match &reference {
                    None => reference = Some(logits),
                    Some(r) => {
                        let d = max_abs_diff(r, &logits);
                        assert!(d < TOL, "{fixture}: page size {page_size}, chunk {chunk}: off by {d}");
                    }
                }
            }
        }
    }
}

#[test]
fn ragged_batch_matches_each_sequence_alone() {
    let mut rng = Rng::seeded(fresh_seed());
    for fixture in FIXTURES {
        let model = load(fixture);
        let vocab = model.config.vocab_size;
        let page = 16;
        // a: fresh 37-token prefill; b: 20 cached, extend by 11; c: 40 cached, decode 1; d: 1 token.
        let seqs = [random_tokens(&mut rng, 37, vocab), random_tokens(&mut rng, 31, vocab), random_tokens(&mut rng, 41, vocab), random_tokens(&mut rng, 1, vocab)];
        let cached = [0usize, 20, 40, 0];
        let solo: Vec<Vec<f32>> = seqs
            .iter()
            .zip(cached)
            .map(|(s, c)| {
                let mut b = backend(&model, 4, page, AttentionMode::Auto);
                let pages = pages_for(&b, s.len());
                if c > 0 {
                    all_logits(&mut b, &s[..c], 0, c, &pages);
                }
                all_logits(&mut b, s, c, usize::MAX, &pages)
            })
            .collect();
        let mut b = backend(&model, 16, page, AttentionMode::Auto);
        let all_pages = pages_for(&b, 16 * page);
        let tables: Vec<&[u32]> = (0..4).map(|i| &all_pages[i * 4..(i + 1) * 4]).collect();
        for (i, s) in seqs.iter().enumerate() {
            if cached[i] > 0 {
                all_logits(&mut b, &s[..cached[i]], 0, cached[i], tables[i]);
            }
        }
        let batch: Vec<SeqChunk> = (0..4)
            .map(|i| SeqChunk {
                tokens: &seqs[i][cached[i]..],
                start_pos: cached[i],
                block_table: tables[i],
                logits: LogitsRequest::All,
            })
            .collect();
        let out = b.forward(&batch).unwrap();
        for i in 0..4 {
            let rows = out.rows[i].clone();
            let got = &out.data[rows.start * vocab..rows.end * vocab];
            let d = max_abs_diff(got, &solo[i]);
            assert!(d < TOL, "{fixture}: sequence {i} in the batch differs from alone by {d}");
        }
    }
}


#[test]
fn bad_batches_are_refused() {
    let model = load("tiny-v2-lite");
    let mut b = backend(&model, 2, 4, AttentionMode::Auto);
    let cases: [(&[u32], usize, &[u32], &str); 4] = [
        (&[], 0, &[0], "no new tokens"),
        (&[1, 2, 3, 4, 5], 0, &[0], "cannot hold"),
        (&[1], 0, &[7], "outside the cache"),
        (&[99_999], 0, &[0], "outside the vocabulary"),
    ];
    for (tokens, start_pos, table, msg) in cases {
        let seq = SeqChunk { tokens, start_pos, block_table: table, logits: LogitsRequest::Last };
        let e = b.forward(&[seq]).unwrap_err().to_string();
        assert!(e.contains(msg), "expected {msg:?} in {e:?}");
    }
}

/// Routing is recorded only when asked; a followed routing changes the output only where the
/// token's own margin lies below the bound, and the record keeps the backend's own choice.
#[test]
fn routing_is_recorded_on_request_and_followed_only_within_the_bound() {
    let mut rng = Rng::seeded(fresh_seed());
    let model = load("tiny-v2-lite");
    let tokens = random_tokens(&mut rng, 40, model.config.vocab_size);
    let run = |record: bool, follow: Option<(Vec<Vec<mlahost_engine::TokenRoute>>, f32)>| {
        let mut b = backend(&model, 8, 16, AttentionMode::Auto);
        if record {
            b.record_routes();
        }
        if let Some((r, within)) = follow {
            b.follow_routing(r, within);
        }
        let pages = pages_for(&b, tokens.len());
        let logits = b.forward(&[SeqChunk { tokens: &tokens, start_pos: 0, block_table: &pages, logits: LogitsRequest::All }]).unwrap().data;
        (logits, b.routing().unwrap())
    };
    let (plain, none) = run(false, None);
    assert!(none.is_none(), "not recorded unless asked");
    let (recorded, own) = run(true, None);
    let own = own.expect("recorded");
    assert_eq!(plain, recorded, "recording does not change the result");
    let moe_layers = own.iter().filter(|l| !l.is_empty()).count();
    assert!(moe_layers > 0 && own.iter().all(|l| l.is_empty() || l.len() == tokens.len()));
    // another backend's routing: every token's first chosen expert swapped for one it did not choose
    let experts = model.config.moe.as_ref().unwrap().n_routed_experts as u32;
    let other: Vec<Vec<_>> = own
        .iter()
        .map(|l| {
            l.iter()
                .map(|r| {
                    let mut e = r.experts.clone();
                    e[0] = (0..experts).find(|x| !r.experts.contains(x)).unwrap();
                    e.sort_unstable();
                    mlahost_engine::TokenRoute { experts: e, margin: f32::NAN }
                })
                .collect()
        })
        .collect();
    let (unchanged, _) = run(true, Some((other.clone(), 0.0)));
    assert_eq!(unchanged, plain, "a bound of 0 follows nothing");
    let (steered, rec) = run(true, Some((other, f32::INFINITY)));
    assert_ne!(steered, plain, "an unbounded follow takes the other experts");
    // the first MoE layer's router sees nothing the followed routing changed: its record is the
    // backend's own choice, not the followed one
    let first = own.iter().position(|l| !l.is_empty()).unwrap();
    assert_eq!(rec.unwrap()[first], own[first], "the record keeps the backend's own choice");
}
