//! Who calls the API: the IAM principal API Gateway's authorizer names (the driver
//! function takes it from the request context), or the one local user of `cellmatrix
//! serve` and of in-process calls. The driver's routes find it as a request extension.

use sha2::{Digest, Sha256};

/// Longest identity taken (an IAM ARN is at most 2048 characters).
const MAX_IDENTITY: usize = 2048;

/// A caller of the API, by its identity (an IAM ARN, or [`Caller::LOCAL`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    identity: String,
}

impl Caller {
    /// The identity of the one user of an API without authentication.
    pub const LOCAL: &'static str = "local";

    /// The local user.
    pub fn local() -> Caller {
        Caller {
            identity: Self::LOCAL.to_string(),
        }
    }

    /// A caller named `identity`; `None` when it is empty, longer than 2048 bytes or
    /// holds a control character (nothing a principal's ARN or id holds).
    pub fn new(identity: &str) -> Option<Caller> {
        let ok = !identity.is_empty()
            && identity.len() <= MAX_IDENTITY
            && !identity.chars().any(char::is_control);
        ok.then(|| Caller {
            identity: identity.to_string(),
        })
    }

    /// The identity, as given.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The caller as a store key segment: 32 hex digits of the identity's SHA-256, so a
    /// key never carries a caller's text (an ARN holds `/` and `:`).
    pub fn key(&self) -> String {
        hex::encode(&Sha256::digest(self.identity.as_bytes())[..16])
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_checked_and_keys_are_hex() {
        let arn = Caller::new("arn:aws:iam::123456789012:user/Admin").unwrap();
        assert_eq!(arn.key().len(), 32);
        assert!(arn.key().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(arn.key(), Caller::local().key());
        assert_eq!(Caller::new("local"), Some(Caller::local()));
        for bad in ["", "a\nb", "\0", &"a".repeat(2049)] {
            assert!(Caller::new(bad).is_none(), "{bad:?}");
        }
    }
}
