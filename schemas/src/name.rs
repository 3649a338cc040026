//! Node names: the one place that decides what may become part of a subject.

use std::{borrow::Cow, fmt, str::FromStr};

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;

/// Longest accepted node name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// The pattern every node name matches, as a regular expression.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";

/// A validated node name: 1 to 64 ASCII letters, digits, `_` or `-`.
///
/// Such a name is safe as a NATS subject token (no `.`, `*`, `>` or whitespace), as a
/// NATS service name, as a Mermaid node id and inside HTML attributes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct NodeName(String);

/// Why a node name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("node name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("node name is {0} bytes long, at most {MAX_NAME_LEN} are allowed")]
    TooLong(usize),
    /// The name holds a character outside `[A-Za-z0-9_-]`.
    #[error("node name {name:?} contains {found:?}; only A-Z, a-z, 0-9, '_' and '-' are allowed")]
    BadChar {
        /// The refused name, shortened when long.
        name: String,
        /// The first character that is not allowed.
        found: char,
    },
}

impl NodeName {
    /// Whether `name` is valid (what [`NodeName::new`] accepts), without building one.
    pub fn is_valid(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }

    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if let Some(found) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(NameError::BadChar {
                name: name.chars().take(MAX_NAME_LEN).collect(),
                found,
            });
        }
        if name.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(name.len()));
        }
        Ok(Self(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for NodeName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for NodeName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<NodeName> for String {
    fn from(n: NodeName) -> String {
        n.0
    }
}

impl AsRef<str> for NodeName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl JsonSchema for NodeName {
    fn schema_name() -> Cow<'static, str> {
        "NodeName".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": NAME_PATTERN,
            "description": "A node name: 1 to 64 of A-Z, a-z, 0-9, '_' and '-'."
        })
    }
}

/// Maps keyed by node name can be looked up with a `&str` (a name hashes and compares
/// as its text).
impl std::borrow::Borrow<str> for NodeName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_seed_names_and_limits() {
        for ok in ["UI", "DS", "node_1", "a-b", &"x".repeat(64)] {
            assert_eq!(NodeName::new(ok).map(String::from), Ok(ok.to_string()));
        }
    }

    #[test]
    fn refuses_subject_syntax_and_junk() {
        assert_eq!(NodeName::new(""), Err(NameError::Empty));
        assert_eq!(NodeName::new("x".repeat(65)), Err(NameError::TooLong(65)));
        for (bad, found) in [
            ("a.b", '.'),
            ("*", '*'),
            (">", '>'),
            ("a b", ' '),
            ("é", 'é'),
            ("a\n", '\n'),
            ("<b>", '<'),
        ] {
            match NodeName::new(bad) {
                Err(NameError::BadChar { found: f, .. }) => assert_eq!(f, found, "{bad:?}"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<NodeName>("\"V\"").is_ok());
        assert!(serde_json::from_str::<NodeName>("\"status.>\"").is_err());
        assert!(serde_json::from_str::<NodeName>("3").is_err());
    }
}
