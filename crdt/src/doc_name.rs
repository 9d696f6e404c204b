//! Validated document names, as they appear in `/ws/{doc}` and in the store.

use std::fmt;

/// Longest accepted document name, in bytes of UTF-8.
pub const MAX_DOC_NAME_BYTES: usize = 255;

/// A document name: non-empty, at most [`MAX_DOC_NAME_BYTES`] bytes, no control characters and
/// no path separators, so it is safe as a store key, in logs and in URLs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocName(String);

/// Why a string is not a valid [`DocName`].
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DocNameError {
    /// The name is the empty string.
    #[error("document name is empty")]
    Empty,
    /// The name is longer than [`MAX_DOC_NAME_BYTES`].
    #[error("document name is {len} bytes long, the limit is {MAX_DOC_NAME_BYTES}")]
    TooLong {
        /// Length of the rejected name, in bytes.
        len: usize,
    },
    /// The name contains a control character (see [`char::is_control`]).
    #[error("document name contains a control character")]
    ControlCharacter,
    /// The name contains `/` or `\`.
    #[error("document name contains a slash or backslash")]
    Slash,
}

impl DocName {
    /// Validates `name`.
    pub fn parse(name: &str) -> Result<DocName, DocNameError> {
        if name.is_empty() {
            return Err(DocNameError::Empty);
        }
        if name.len() > MAX_DOC_NAME_BYTES {
            return Err(DocNameError::TooLong { len: name.len() });
        }
        if name.chars().any(char::is_control) {
            return Err(DocNameError::ControlCharacter);
        }
        if name.contains(['/', '\\']) {
            return Err(DocNameError::Slash);
        }
        Ok(DocName(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DocName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for DocName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["notes", "team notes 2024", "ünïcødé-📝", "a.b_c-d"] {
            let doc = DocName::parse(name).unwrap();
            assert_eq!(doc.as_str(), name);
            assert_eq!(doc.to_string(), name);
            assert_eq!(doc.as_ref(), name);
        }
        assert!(DocName::parse(&"x".repeat(MAX_DOC_NAME_BYTES)).is_ok());
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(DocName::parse(""), Err(DocNameError::Empty));
        assert_eq!(
            DocName::parse(&"x".repeat(256)),
            Err(DocNameError::TooLong { len: 256 })
        );
        assert_eq!(DocName::parse("a\nb"), Err(DocNameError::ControlCharacter));
        assert_eq!(
            DocName::parse("a\u{7f}"),
            Err(DocNameError::ControlCharacter)
        );
        assert_eq!(DocName::parse("a/b"), Err(DocNameError::Slash));
        assert_eq!(DocName::parse("a\\b"), Err(DocNameError::Slash));
    }

    proptest! {
        #[test]
        fn valid_names_satisfy_every_rule(name in "\\PC*") {
            if let Ok(doc) = DocName::parse(&name) {
                let s = doc.as_str();
                prop_assert!(!s.is_empty() && s.len() <= MAX_DOC_NAME_BYTES);
                prop_assert!(!s.chars().any(|c| c.is_control() || c == '/' || c == '\\'));
            }
        }
    }
}
