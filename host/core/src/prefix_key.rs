//! Identity of a full page of tokens in the prefix cache: a hash chained over the parent page's
//! hash, a salt (per tenant, so tenants never share pages unless they choose to) and the page's
//! tokens. Hits re-check the tokens, so a hash collision can never serve wrong latents.

use std::hash::{Hash, Hasher};

/// The chained hash of page `i` of a sequence. Deterministic within a build, which is all a
/// process-local cache needs.
pub fn page_hash(parent: Option<u64>, salt: u64, tokens: &[u32]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    parent.hash(&mut h);
    salt.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// Hashes of every full page of `tokens`, in order (each chained on the previous).
pub fn page_hashes(tokens: &[u32], page_size: usize, salt: u64) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::with_capacity(tokens.len() / page_size.max(1));
    for page in tokens.chunks_exact(page_size.max(1)) {
        out.push(page_hash(out.last().copied(), salt, page));
    }
    out
}

/// A prompt's page hashes, computed once after admission (when its salt is known) and read by
/// the router (each replica's cached prefix) and the scheduler (prefix matching, registering):
/// the chained hashes of the full pages of the prompt less its last token, which is always
/// computed. The salt and page size they were made with travel along, so a scheduler with
/// another page size, or a sequence with another salt, computes its own instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptHashes {
    pub salt: u64,
    pub page_size: usize,
    pub hashes: std::sync::Arc<[u64]>,
}

impl PromptHashes {
    pub fn of(prompt: &[u32], page_size: usize, salt: u64) -> Self {
        let reusable = &prompt[..prompt.len().saturating_sub(1)];
        Self { salt, page_size, hashes: page_hashes(reusable, page_size, salt).into() }
    }

    /// The hash of page `i`, when these hashes were made for `salt` and `page_size`.
    pub fn get(&self, i: usize, salt: u64, page_size: usize) -> Option<u64> {
        if self.salt != salt || self.page_size != page_size {
            return None;
        }
        self.hashes.get(i).copied()
    }
}

/// A salt from a string (a tenant id or a request's `cache_salt`); no salt is 0.
pub fn salt_of(s: Option<&str>) -> u64 {
    match s {
        None => 0,
        Some(s) => page_hash(None, 0x5a17, &s.bytes().map(u32::from).collect::<Vec<_>>()) | 1,
    }
}

/// A salt from a tuple of strings (e.g. tenant and request salt). Each part is hashed with
/// its length first, so no two different tuples share an encoding ("a/b" + "c" differs from
/// "a" + "b/c"); never 0.
pub fn salt_of_parts(parts: &[&str]) -> u64 {
    let mut words: Vec<u32> = Vec::new();
    for p in parts {
        words.push(p.len() as u32);
        words.extend(p.bytes().map(u32::from));
    }
    page_hash(None, 0x5a18, &words) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chained_and_salted() {
        let a = page_hashes(&[1, 2, 3, 4, 5, 6, 7], 2, 0);
        assert_eq!(a.len(), 3);
        let b = page_hashes(&[9, 9, 3, 4], 2, 0);
        assert_ne!(a[1], b[1], "same page tokens under a different parent differ");
        assert_ne!(page_hashes(&[1, 2], 2, salt_of(Some("x")))[0], a[0]);
        assert_eq!(page_hashes(&[1, 2], 2, 0)[0], a[0]);
    }

    #[test]
    fn salt_tuples_are_unambiguous() {
        assert_ne!(salt_of_parts(&["tenant", "acme", "dev"]), salt_of_parts(&["tenant", "acme/dev"]));
        assert_ne!(salt_of_parts(&["ab", "c"]), salt_of_parts(&["a", "bc"]));
        assert_eq!(salt_of_parts(&["tenant", "acme"]), salt_of_parts(&["tenant", "acme"]));
        assert_ne!(salt_of_parts(&[]), 0);
    }
}
