//! API tokens: Dapr's app token (`DAPR_API_TOKEN`, header or metadata
//! `dapr-api-token`) and leasehold's separate admin token for the
//! operations that can break someone else's lock.

use std::fmt;

/// The name of the header (HTTP) and metadata key (gRPC) that carries the
/// app token, as in daprd.
pub const TOKEN_HEADER: &str = "dapr-api-token";

/// The header and metadata key for the admin token.
pub const ADMIN_TOKEN_HEADER: &str = "leasehold-admin-token";

/// A token the sidecar checks. `Debug` never shows it.
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl Token {
    /// A token from its text; `None` when empty (no check).
    pub fn new(value: &str) -> Option<Self> {
        (!value.is_empty()).then(|| Token(value.as_bytes().to_vec()))
    }

    /// Compare in time that depends only on the lengths, never on where the
    /// first difference is, so the comparison leaks nothing to a timing
    /// attacker.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = &self.0;
        let mut diff =
            (expected.len() ^ presented.len()) as u8 | u8::from(expected.len() != presented.len());
        for (i, byte) in expected.iter().enumerate() {
            let other = presented.get(i).copied().unwrap_or(0);
            diff |= byte ^ other;
        }
        diff == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// Which tokens the sidecar requires.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// The app token; `None` means no check, as daprd without
    /// `DAPR_API_TOKEN`.
    pub api: Option<Token>,
    /// The admin token; `None` means admin operations are refused.
    pub admin: Option<Token>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token came with the request.
    Missing,
    /// A token came and it is wrong.
    Mismatch,
}

impl Auth {
    /// Check the app token of a request (`presented` is the header value).
    pub fn check_api(&self, presented: Option<&[u8]>) -> Result<(), Refusal> {
        match &self.api {
            Some(expected) => check(expected, presented),
            None => Ok(()),
        }
    }
}

/// Check a presented token against the expected one.
pub(crate) fn check(expected: &Token, presented: Option<&[u8]>) -> Result<(), Refusal> {
    match presented {
        None => Err(Refusal::Missing),
        Some(value) if expected.matches(value) => Ok(()),
        Some(_) => Err(Refusal::Mismatch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison() {
        let token = Token::new("secret").unwrap();
        assert!(token.matches(b"secret"));
        assert!(!token.matches(b"secreT"));
        assert!(!token.matches(b"secret2"));
        assert!(!token.matches(b"secre"));
        assert!(!token.matches(b""));
        assert!(Token::new("").is_none());
        assert_eq!(format!("{token:?}"), "Token(***)");
    }

    #[test]
    fn no_token_means_no_check() {
        let auth = Auth::default();
        assert_eq!(auth.check_api(None), Ok(()));
        let auth = Auth {
            api: Token::new("t"),
            admin: None,
        };
        assert_eq!(auth.check_api(None), Err(Refusal::Missing));
        assert_eq!(auth.check_api(Some(b"x")), Err(Refusal::Mismatch));
        assert_eq!(auth.check_api(Some(b"t")), Ok(()));
    }
}
