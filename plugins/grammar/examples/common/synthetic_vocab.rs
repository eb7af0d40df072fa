// A deterministic synthetic vocabulary for the mask-cost benchmarks (no tokenizer of that size
// ships with the repository): the 256 bytes, JSON punctuation, then word-like pieces (letters
// with and without a leading space, digits, mixed punctuation) until `n - 1` tokens, and an
// end-of-sequence special token as the last id. The same text is included by the host's
// benchmark (host/plugins/examples/grammar_mask_cost.rs), so both measure the same vocabulary.

/// Token bytes (index = id), the special ids and the EOS ids.
pub fn synthetic_vocab(n: usize) -> (Vec<Vec<u8>>, Vec<u32>, Vec<u32>) {
    let mut seen = std::collections::HashSet::new();
    let mut tokens: Vec<Vec<u8>> = Vec::with_capacity(n);
    let mut add = |t: Vec<u8>, tokens: &mut Vec<Vec<u8>>| {
        if tokens.len() < n - 1 && seen.insert(t.clone()) {
            tokens.push(t);
        }
    };
    for b in 0..=255u8 {
        add(vec![b], &mut tokens);
    }
    for p in ["{\"", "\":", "\",", "\"}", "\":\"", "\":[", "],", "},", "[{", "}]", "true", "false", "null", ", ", ": ", "\"\n"] {
        add(p.as_bytes().to_vec(), &mut tokens);
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let letters = b"etaoinshrdlucmfwypvbgkjqxz";
    while tokens.len() < n - 1 {
        let r = next();
        let len = 1 + (r % 9) as usize;
        let mut t = Vec::with_capacity(len + 1);
        match r >> 60 {
            0..=7 => t.push(b' '),
            8 => t.push(b'"'),
            _ => {}
        }
        for k in 0..len {
            let x = next();
            let c = match (r >> 56) & 15 {
                0 => b'0' + (x % 10) as u8,
                1 => b"_-.,:;!?()[]{}/\\"[(x % 16) as usize],
                _ => letters[((x % 26) * (x % 26) / 26) as usize],
            };
            t.push(if k == 0 && (r >> 52) & 7 == 0 { c.to_ascii_uppercase() } else { c });
        }
        add(t, &mut tokens);
    }
    tokens.push(b"<|end_of_text|>".to_vec());
    let eos = (tokens.len() - 1) as u32;
    (tokens, vec![eos], vec![eos])
}

/// The schema both benchmarks constrain to: nested objects, an array of objects, enums,
/// bounded integers and strings.
pub const SCHEMA: &str = r#"{"type": "object", "properties": {
    "id": {"type": "integer", "minimum": 0, "maximum": 1000000},
    "name": {"type": "string", "maxLength": 40},
    "status": {"enum": ["active", "suspended", "deleted"]},
    "address": {"type": "object", "properties": {"street": {"type": "string"}, "city": {"type": "string"},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"}}, "required": ["street", "city", "zip"],
                "additionalProperties": false},
    "orders": {"type": "array", "items": {"type": "object", "properties": {
        "sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1, "maximum": 99},
        "gift": {"type": "boolean"}}, "required": ["sku", "qty"], "additionalProperties": false}, "maxItems": 8},
    "tags": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}},
  "required": ["id", "name", "status", "address", "orders"], "additionalProperties": false}"#;

/// Picks one allowed id from a mask (64-bit words), pseudo-randomly from `seed`.
pub fn pick(words: &[u64], seed: u64) -> Option<u32> {
    let ids: Vec<u32> = words.iter().enumerate().flat_map(|(w, &bits)| (0..64).filter(move |b| bits >> b & 1 == 1).map(move |b| (w * 64 + b) as u32)).collect();
    (!ids.is_empty()).then(|| ids[(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 33) as usize % ids.len()])
}
