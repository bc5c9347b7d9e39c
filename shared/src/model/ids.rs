//! Opaque resource ids: a short prefix naming the kind, then 26 random base32 characters.
//! Random (not time-ordered) so writes spread over a partition's sort-key range.

use rand::Rng;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const RANDOM_LEN: usize = 26;

/// The kinds of ids and their prefixes.
pub struct Id;

impl Id {
    pub const WORKSPACE: &'static str = "ws";
    pub const CONTACT: &'static str = "ct";
    pub const LIST: &'static str = "ls";
    pub const API_KEY: &'static str = "key";
    pub const JOB: &'static str = "job";
    pub const MESSAGE: &'static str = "msg";
    pub const CAMPAIGN: &'static str = "cpg";
    pub const RUN: &'static str = "run";
    pub const PROVIDER: &'static str = "pc";
    pub const SENDER: &'static str = "sp";
    pub const TEMPLATE: &'static str = "tpl";
    pub const COMPONENT: &'static str = "cmp";
    pub const IMPORT: &'static str = "imp";

    /// A new random id of the given kind, e.g. `ct_5x0...`.
    pub fn generate(prefix: &str) -> String {
        let mut rng = rand::rng();
        let body: String = (0..RANDOM_LEN)
            .map(|_| ALPHABET[rng.random_range(0..32)] as char)
            .collect();
        format!("{prefix}_{body}")
    }

    /// True when `id` has the shape of an id of this kind. Path parameters that fail
    /// this are simply "not found": no key is built from unchecked input.
    pub fn is_valid(prefix: &str, id: &str) -> bool {
        id.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('_'))
            .is_some_and(|body| {
                body.len() == RANDOM_LEN && body.bytes().all(|b| ALPHABET.contains(&b))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_valid_and_distinct() {
        let a = Id::generate(Id::CONTACT);
        let b = Id::generate(Id::CONTACT);
        assert_ne!(a, b);
        assert!(Id::is_valid(Id::CONTACT, &a));
        assert!(!Id::is_valid(Id::LIST, &a));
        assert!(!Id::is_valid(Id::CONTACT, "ct_#"));
        assert!(!Id::is_valid(Id::CONTACT, &format!("{a}x")));
    }
}
