//! Property tests (fuzzing) of every decoder of network input in `schemas`: activation
//! requests and replies from NATS payloads, status events from subjects and payloads,
//! node names, colours and activation ids from anywhere. None may panic, and what they
//! accept must match the patterns published in the JSON Schema files.
#![allow(clippy::unwrap_used, missing_docs)]

use proptest::prelude::*;
use schemas::{
    activation::ActivationId, color::color_pattern, name::NAME_PATTERN, reply_in_place::ReplyRoot,
    ActivationReply, ActivationRequest, Color, NodeName, StatusEvent,
};

/// Arbitrary JSON values, nested a few levels.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("UI"),
            Just("red"),
            Just("#0f0"),
            Just("a.b"),
            Just(">")
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::hash_map(
                prop_oneof![
                    Just("activation_id".to_string()),
                    Just("color".to_string()),
                    Just("timeout_ms".to_string()),
                    Just("path".to_string()),
                    Just("state".to_string()),
                    Just("node".to_string()),
                    Just("code".to_string()),
                    ".{0,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn activation_request_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = ActivationRequest::decode(&bytes);
    }

    #[test]
    fn activation_requests_from_json_round_trip(value in json()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        if let Ok(request) = ActivationRequest::decode(&bytes) {
            let again = ActivationRequest::decode(&serde_json::to_vec(&request).unwrap()).unwrap();
            prop_assert_eq!(again, request);
        }
    }

    #[test]
    fn reply_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256), value in json()) {
        let _ = serde_json::from_slice::<ActivationReply>(&bytes);
        let _ = serde_json::from_value::<ActivationReply>(value);
    }

    /// A reply tree read in place is one that decoding accepts, to the same root, and
    /// whose JSON is what encoding the decoded tree gives (so it may be passed on as it
    /// came): trees of two levels whose nodes have fields left out, added or replaced.
    #[test]
    fn a_reply_read_in_place_is_the_tree_it_decodes_to(
        edits in prop::collection::vec((0usize..2, 0usize..10, 0usize..9), 0..4),
        spaced in any::<bool>(),
    ) {
        const NAMES: [&str; 10] = ["node", "activation_id", "instance", "outcome", "code",
            "elapsed_ms", "message", "result", "children", "other"];
        const VALUES: [&str; 9] = ["\"V\"", "\"ok\"", "null", "200", "-1", "\"a.b\"",
            "\"x\\u0041\"", "{\"k\":[1,2.5]}", "[]"];
        let node = |name: &str, children: &str| {
            let fields: Vec<(String, String)> = [
                ("node", format!("\"{name}\"")), ("activation_id", "\"a1\"".into()),
                ("instance", "\"i1\"".into()), ("outcome", "\"ok\"".into()),
                ("code", "200".into()), ("elapsed_ms", "3".into()),
                ("message", "\"ok\"".into()), ("children", children.into()),
            ].into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            fields
        };
        let leaf = node("D", "[]");
        let mut nodes = [node("UI", ""), leaf];
        for (at, name, value) in &edits {
            let fields = &mut nodes[*at];
            let name = NAMES[*name].to_string();
            match fields.iter().position(|(k, _)| *k == name) {
                // The value 'null' on an existing field stands for leaving it out.
                Some(i) if *value == 2 => { fields.remove(i); }
                Some(i) => fields[i].1 = VALUES[*value].into(),
                None => fields.push((name, VALUES[*value].into())),
            }
        }
        let sep = if spaced { ", " } else { "," };
        let object = |fields: &[(String, String)]| format!("{{{}}}", fields.iter()
            .map(|(k, v)| format!("\"{k}\":{v}")).collect::<Vec<_>>().join(sep));
        let child = object(&nodes[1]);
        for field in &mut nodes[0] {
            if field.0 == "children" && field.1.is_empty() {
                field.1 = format!("[{child}]");
            }
        }
        let json = object(&nodes[0]);
        let read = ReplyRoot::read(json.as_bytes());
        // Not vacuous: the tree as made is read.
        prop_assert!(read.is_some() || !edits.is_empty(), "{}", json);
        if let Some(root) = read {
            let tree: ActivationReply = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&root, &ReplyRoot::of(&tree));
            let as_sent: serde_json::Value = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(as_sent, serde_json::to_value(&tree).unwrap(), "{}", json);
        }
    }

    #[test]
    fn status_decoder_never_panics_and_trusts_only_the_subject(
        subject in prop_oneof![".{0,30}", "status\\.[A-Za-z0-9_.*>-]{0,12}"],
        value in json(),
        bytes in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        let _ = StatusEvent::decode(&subject, &bytes);
        if let Ok(event) = StatusEvent::decode(&subject, &serde_json::to_vec(&value).unwrap()) {
            prop_assert_eq!(format!("status.{}", event.node), subject);
        }
    }

    #[test]
    fn names_ids_and_colours_match_their_published_patterns(text in prop_oneof![
        ".{0,70}",
        "[A-Za-z0-9_-]{0,70}",
        "#[0-9a-fA-F]{0,9}",
        "[a-z]{3,12}",
    ]) {
        let name = regex::Regex::new(NAME_PATTERN).unwrap();
        let colour = regex::Regex::new(&color_pattern()).unwrap();
        prop_assert_eq!(NodeName::new(text.as_str()).is_ok(), name.is_match(&text));
        prop_assert_eq!(ActivationId::new(text.as_str()).is_ok(), name.is_match(&text));
        prop_assert_eq!(Color::new(&text).is_ok(), colour.is_match(&text));
    }
}
