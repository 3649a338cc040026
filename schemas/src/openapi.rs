//! poem-openapi support: validated strings parse (and are documented) as themselves, so
//! an invalid name or colour is refused by the OpenAPI layer with a clear message.

use std::borrow::Cow;

use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef},
    types::{ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type},
};
use serde_json::Value;

use crate::{activation::ActivationId, color, name, Color, NodeName};

macro_rules! validated_string {
    ($ty:ty, $name:literal, $description:expr, $pattern:expr, $max:expr) => {
        impl Type for $ty {
            const IS_REQUIRED: bool = true;
            type RawValueType = Self;
            type RawElementValueType = Self;

            fn name() -> Cow<'static, str> {
                $name.into()
            }

            fn schema_ref() -> MetaSchemaRef {
                MetaSchemaRef::Inline(Box::new(MetaSchema {
                    description: Some($description),
                    pattern: Some($pattern),
                    max_length: Some($max),
                    min_length: Some(1),
                    ..MetaSchema::new("string")
                }))
            }

            fn as_raw_value(&self) -> Option<&Self::RawValueType> {
                Some(self)
            }

            fn raw_element_iter<'a>(
                &'a self,
            ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
                Box::new(self.as_raw_value().into_iter())
            }
        }

        impl ParseFromJSON for $ty {
            fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
                match value.unwrap_or_default() {
                    Value::String(text) => <$ty>::try_from(text).map_err(ParseError::custom),
                    other => Err(ParseError::expected_type(other)),
                }
            }
        }

        impl ParseFromParameter for $ty {
            fn parse_from_parameter(text: &str) -> ParseResult<Self> {
                <$ty>::try_from(text.to_string()).map_err(ParseError::custom)
            }
        }

        impl ToJSON for $ty {
            fn to_json(&self) -> Option<Value> {
                Some(Value::String(self.as_str().to_string()))
            }
        }
    };
}

validated_string!(
    NodeName,
    "NodeName",
    "A node name: 1 to 64 of A-Z, a-z, 0-9, '_' and '-'.",
    name::NAME_PATTERN.to_string(),
    name::MAX_NAME_LEN
);
validated_string!(
    ActivationId,
    "ActivationId",
    "An activation id: 1 to 64 of A-Z, a-z, 0-9, '_' and '-'.",
    name::NAME_PATTERN.to_string(),
    name::MAX_NAME_LEN
);
validated_string!(
    Color,
    "Color",
    "A CSS colour: #rgb, #rgba, #rrggbb, #rrggbbaa or a lower-case CSS colour name.",
    color::color_pattern(),
    color::MAX_COLOR_LEN
);
