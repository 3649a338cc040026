//! Colours a client may choose for a node: CSS hex or a fixed list of names.

use std::{borrow::Cow, fmt, str::FromStr};

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;

/// Colour names accepted besides hex notation (CSS named colours, lower case).
pub const NAMED_COLORS: &[&str] = &[
    "black",
    "white",
    "gray",
    "grey",
    "silver",
    "red",
    "maroon",
    "orange",
    "gold",
    "yellow",
    "olive",
    "lime",
    "green",
    "teal",
    "cyan",
    "aqua",
    "blue",
    "navy",
    "purple",
    "magenta",
    "fuchsia",
    "pink",
    "hotpink",
    "deeppink",
    "violet",
    "indigo",
    "brown",
    "coral",
    "salmon",
    "tomato",
    "crimson",
    "turquoise",
    "skyblue",
    "deepskyblue",
    "dodgerblue",
    "royalblue",
    "springgreen",
    "chartreuse",
    "lawngreen",
    "limegreen",
    "orchid",
    "plum",
    "khaki",
];

/// Longest accepted colour text.
pub const MAX_COLOR_LEN: usize = 32;

/// The regular expression every accepted colour matches: hex notation (any case) or one
/// of [`NAMED_COLORS`] (lower case).
pub fn color_pattern() -> String {
    format!(
        "^(#([0-9a-fA-F]{{3}}|[0-9a-fA-F]{{4}}|[0-9a-fA-F]{{6}}|[0-9a-fA-F]{{8}})|{})$",
        NAMED_COLORS.join("|")
    )
}

/// A validated colour: `#rgb`, `#rgba`, `#rrggbb`, `#rrggbbaa` (stored in lower case) or
/// one of [`NAMED_COLORS`]. Safe to place in CSS, Mermaid `style` lines and HTML.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Color(String);

/// Why a colour was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "colour {shown:?} is not accepted: use #rgb, #rgba, #rrggbb, #rrggbbaa or a lower-case CSS colour name such as red, lime, orange"
)]
pub struct ColorError {
    /// The refused text, shortened to 32 characters.
    pub shown: String,
}

impl Color {
    /// Whether `text` is a valid colour (what [`Color::new`] accepts).
    pub fn is_valid(text: &str) -> bool {
        match text.strip_prefix('#') {
            Some(hex) => {
                matches!(hex.len(), 3 | 4 | 6 | 8) && hex.bytes().all(|b| b.is_ascii_hexdigit())
            }
            None => NAMED_COLORS.contains(&text),
        }
    }

    /// Validates and normalises `text`.
    pub fn new(text: impl AsRef<str>) -> Result<Self, ColorError> {
        let text = text.as_ref();
        if Self::is_valid(text) {
            Ok(Self(text.to_ascii_lowercase()))
        } else {
            Err(ColorError {
                shown: text.chars().take(MAX_COLOR_LEN).collect(),
            })
        }
    }

    /// The colour as CSS text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Color {
    type Err = ColorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for Color {
    type Error = ColorError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<Color> for String {
    fn from(c: Color) -> String {
        c.0
    }
}

impl JsonSchema for Color {
    fn schema_name() -> Cow<'static, str> {
        "Color".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A CSS colour: #rgb, #rgba, #rrggbb, #rrggbbaa or a lower-case CSS colour name.",
            "pattern": color_pattern()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_agrees_with_validation() {
        let pattern = color_pattern();
        assert!(pattern.contains("|hotpink|"));
        assert!(pattern.starts_with("^(#(") && pattern.ends_with(")$"));
    }

    #[test]
    fn accepts_hex_and_names_normalised() {
        for (input, out) in [
            ("#0F0", "#0f0"),
            ("#00ff0080", "#00ff0080"),
            ("#abcd", "#abcd"),
            ("#ABCDEF", "#abcdef"),
            ("lime", "lime"),
        ] {
            assert_eq!(Color::new(input).map(String::from), Ok(out.to_string()));
        }
    }

    #[test]
    fn refuses_injection_and_junk() {
        for bad in [
            "",
            "#",
            "#12",
            "#12345",
            "#ggg",
            "red;background:url(x)",
            "red\nstyle A fill:#000",
            "</script>",
            "rgb(1,2,3)",
            "notacolor",
            "#fff ",
            "Red",
        ] {
            assert!(Color::new(bad).is_err(), "{bad:?} was accepted");
        }
        let long = Color::new("x".repeat(1000)).unwrap_err();
        assert_eq!(long.shown.len(), 32);
    }
}
