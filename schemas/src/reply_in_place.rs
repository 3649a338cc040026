//! A reply tree read in place: checked as decoding an [`ActivationReply`] checks it, but
//! without building the tree, so that its JSON can be passed on as it came (the gateway
//! answers `POST /activate` and keeps its record with the node's bytes).

use std::borrow::Cow;

use serde::{
    de::{IgnoredAny, MapAccess, SeqAccess, Visitor},
    Deserialize,
};

use crate::{ActivationId, ActivationReply, NodeName, Outcome};

/// The root of a reply tree read in place: what a caller needs to answer with the tree's
/// JSON as it is.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplyRoot {
    /// The node that answered.
    pub node: NodeName,
    /// The activation.
    pub activation_id: ActivationId,
    /// Whether a replica answered (the root names its `instance`).
    pub answered: bool,
    /// How the activation of the root ended.
    pub outcome: Outcome,
    /// The root's code.
    pub code: u16,
    /// The root's time, in milliseconds.
    pub elapsed_ms: u64,
    /// The root's message.
    pub message: String,
}

/// One node of the tree, its strings borrowed. Every field is read so that it is
/// checked as [`ActivationReply`]'s decoding checks it, and read only when encoding the
/// decoded tree gives the same JSON back: a field this version does not know (decoding
/// drops it), `null` for an optional field or no `children` (encoding writes neither) are
/// refused, and so is an id or instance with escapes (rare: the caller decodes those).
/// Children are checked as they are read and not kept: only the root's fields are.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InPlace<'a> {
    #[serde(borrow, deserialize_with = "name")]
    node: &'a str,
    #[serde(borrow, deserialize_with = "name")]
    activation_id: &'a str,
    #[serde(default, borrow, deserialize_with = "present")]
    instance: Option<&'a str>,
    outcome: Outcome,
    code: u16,
    elapsed_ms: u64,
    #[serde(borrow)]
    message: Cow<'a, str>,
    #[serde(default, deserialize_with = "present")]
    #[allow(dead_code)]
    result: Option<NotNull>,
    #[allow(dead_code)]
    children: Children,
}

/// An optional field that is there: `null` is refused, not read as absent.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// A node name or activation id, valid as decoding requires.
fn name<'de, D>(deserializer: D) -> Result<&'de str, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let name = <&str>::deserialize(deserializer)?;
    if NodeName::is_valid(name) {
        Ok(name)
    } else {
        Err(serde::de::Error::custom("not a valid name"))
    }
}

/// Any JSON value but `null` (a `result`), read through and not kept.
struct NotNull;

impl<'de> Deserialize<'de> for NotNull {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NotNull)
    }
}

impl<'de> Visitor<'de> for NotNull {
    type Value = NotNull;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value but null")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(self)
    }
}

/// A node's `children`: each one checked as it is read (see [`InPlace`]), none kept.
struct Children;

impl<'de> Deserialize<'de> for Children {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(Children)
    }
}

impl<'de> Visitor<'de> for Children {
    type Value = Children;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of reply trees")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<InPlace<'de>>()?.is_some() {}
        Ok(self)
    }
}

impl ReplyRoot {
    /// The root of the reply tree in `json`, when `json` is the JSON of the
    /// [`ActivationReply`] it decodes to (so that passing `json` on passes that tree on,
    /// whatever its spaces and key order); `None` otherwise: not a reply tree, or one that
    /// decoding would change (see [`InPlace`]), or one with escapes in an id.
    pub fn read(json: &[u8]) -> Option<Self> {
        // Checked as UTF-8 once, not string by string (as `from_slice` does).
        let tree: InPlace<'_> = serde_json::from_str(std::str::from_utf8(json).ok()?).ok()?;
        Some(Self {
            node: NodeName::new(tree.node).ok()?,
            activation_id: ActivationId::new(tree.activation_id).ok()?,
            answered: tree.instance.is_some(),
            outcome: tree.outcome,
            code: tree.code,
            elapsed_ms: tree.elapsed_ms,
            message: tree.message.into_owned(),
        })
    }

    /// The root of `reply`.
    pub fn of(reply: &ActivationReply) -> Self {
        Self {
            node: reply.node.clone(),
            activation_id: reply.activation_id.clone(),
            answered: reply.instance.is_some(),
            outcome: reply.outcome,
            code: reply.code,
            elapsed_ms: reply.elapsed_ms,
            message: reply.message.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> ActivationReply {
        let id = ActivationId::new("a1").unwrap();
        let node = |n: &str| NodeName::new(n).unwrap();
        let mut root = ActivationReply::new(node("UI"), id.clone(), Outcome::Failed, "no")
            .answered_by("i1")
            .with_code(500);
        let mut child = ActivationReply::new(node("D"), id, Outcome::Ok, "ok \"q\" \u{e9}");
        child.result = Some(serde_json::json!({"z": [1, 2.5, null], "a": "\u{0}"}));
        root.children = vec![child];
        root
    }

    #[test]
    fn a_tree_as_encoded_is_read_to_its_root() {
        let reply = tree();
        let json = serde_json::to_vec(&reply).unwrap();
        assert_eq!(ReplyRoot::read(&json), Some(ReplyRoot::of(&reply)));
        // Spaces, another key order, escapes in a message: still the same tree.
        let spaced = br#"{ "activation_id":"a1", "node" : "UI", "outcome":"ok", "code":200,
            "elapsed_ms":0, "message":"\u0041\n", "children":[] }"#;
        let root = ReplyRoot::read(spaced).unwrap();
        assert_eq!((root.node.as_str(), root.answered), ("UI", false));
    }

    #[test]
    fn what_decoding_refuses_or_would_change_is_not_read() {
        let valid = serde_json::to_value(tree()).unwrap();
        let with = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut v = valid.clone();
            edit(&mut v);
            serde_json::to_vec(&v).unwrap()
        };
        let refused = [
            // A field this version does not know (decoding would drop it).
            with(&|v| v["extra"] = 1.into()),
            with(&|v| v["children"][0]["extra"] = 1.into()),
            // What encoding the decoded tree would not give back: `null` for an optional
            // field, no children.
            with(&|v| v["instance"] = serde_json::Value::Null),
            with(&|v| v["children"][0]["result"] = serde_json::Value::Null),
            with(&|v| {
                v.as_object_mut()
                    .unwrap()
                    .remove("children")
                    .map(drop)
                    .unwrap()
            }),
            // An escape in a name (valid once decoded: the caller decodes it).
            String::from_utf8(with(&|_| ()))
                .unwrap()
                .replacen(r#""node":"UI""#, r#""node":"U\u0049""#, 1)
                .into_bytes(),
            // Invalid names and ids, anywhere in the tree.
            with(&|v| v["node"] = "a.b".into()),
            with(&|v| v["children"][0]["node"] = ">".into()),
            with(&|v| v["children"][0]["activation_id"] = "".into()),
            // Missing or mistyped fields.
            with(&|v| {
                v.as_object_mut()
                    .unwrap()
                    .remove("message")
                    .map(drop)
                    .unwrap()
            }),
            with(&|v| v["code"] = 70000.into()),
            with(&|v| v["outcome"] = "fine".into()),
            b"{\"node\":\"UI\"".to_vec(),
            b"[]".to_vec(),
            // A node deeper in the tree that is no reply.
            with(&|v| v["children"][0]["children"] = serde_json::json!([{"node": "x"}])),
            // Deeper than the parser goes: refused, not a stack overflow.
            {
                let leaf = r#"{"node":"L","activation_id":"a1","outcome":"ok","code":200,"elapsed_ms":0,"message":"","children":["#;
                let mut deep = leaf.repeat(10_000);
                deep.push_str(&"]}".repeat(10_000));
                deep.into_bytes()
            },
        ];
        for json in refused {
            assert_eq!(
                ReplyRoot::read(&json),
                None,
                "{}",
                String::from_utf8_lossy(&json)
            );
        }
    }
}
