//! The internal API key, compared in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// Holds only the SHA-256 of the key: comparing digests in constant time
/// hides both the content and the length of the expected key.
pub struct ApiKey {
    digest: [u8; 32],
}

impl ApiKey {
    pub fn new(key: &Secret) -> Self {
        Self { digest: Sha256::digest(key.expose().as_bytes()).into() }
    }

    /// Constant-time comparison of a presented key.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented).into();
        self.digest.ct_eq(&presented).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_exact_key() {
        let key = ApiKey::new(&Secret::new("0123456789abcdef"));
        assert!(key.matches(b"0123456789abcdef"));
        assert!(!key.matches(b"0123456789abcdeF"));
        assert!(!key.matches(b"0123456789abcdef "));
        assert!(!key.matches(b""));
    }
}
