//! Property tests (fuzzing) of the gateway's decoders of network input: HTTP bodies,
//! path and query parameters, `Last-Event-ID`, status messages from the bus, and paths
//! that become metric labels.
#![allow(clippy::unwrap_used, missing_docs)]

use gateway::{
    api::{ActivateBody, ColorBody},
    routes::{RouteTable, UNMATCHED},
    sse::{
        ingest::Ingest,
        log::{Limits, Log},
    },
};
use poem_openapi::types::{ParseFromJSON, ParseFromParameter};
use proptest::prelude::*;
use schemas::{activation::ActivationId, NodeName};

fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,16}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::from),
            prop::collection::hash_map(
                prop_oneof![
                    Just("node".to_string()),
                    Just("color".to_string()),
                    Just("timeout_ms".to_string()),
                    Just("activation_id".to_string()),
                    Just("state".to_string()),
                    ".{0,6}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn http_bodies_never_panic_and_accept_only_valid_values(value in json()) {
        if let Ok(body) = ActivateBody::parse_from_json(Some(value.clone())) {
            if let Some(t) = body.timeout_ms {
                prop_assert!((1..=600_000).contains(&t));
            }
        }
        let _ = ColorBody::parse_from_json(Some(value));
    }

    #[test]
    fn parameters_never_panic(text in ".{0,80}") {
        let _ = NodeName::parse_from_parameter(&text);
        let _ = ActivationId::parse_from_parameter(&text);
        let _ = text.trim().parse::<u64>(); // Last-Event-ID
        let table = RouteTable::from_document(
            r#"{"paths":{"/activate":{"post":{}},"/nodes/{node}/color":{"put":{}}}}"#,
        );
        let label = table.label(&text);
        prop_assert!(
            [UNMATCHED, "/activate", "/nodes/{node}/color", "/", "/assets", "/docs", "/openapi.json"]
                .contains(&label.as_str()),
            "{label}"
        );
    }

    #[test]
    fn bus_messages_never_panic(subject in ".{0,30}", payload in prop::collection::vec(any::<u8>(), 0..200), value in json()) {
        let metrics = std::sync::Arc::new(gateway::metrics::Metrics::default());
        let log = Log::new(Limits { history: 8, history_bytes: 1 << 20, buffer: 8 }, metrics.clone());
        let relay = Ingest::new("fuzz".into(), 4096, log, vec![metrics.clone()], metrics);
        let _ = relay.accept_status(&subject, &payload);
        if let Ok(Some(frame)) = relay.accept_status(&subject, &serde_json::to_vec(&value).unwrap()) {
            let text = String::from_utf8(frame.bytes.to_vec()).unwrap();
            prop_assert_eq!(text.matches('\n').count(), 4, "SSE data stays on one line: {}", text);
        }
    }
}
