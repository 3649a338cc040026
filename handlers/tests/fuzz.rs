//! Property tests (fuzzing) of the decoders of NATS input in the node runtime: reply
//! messages with arbitrary headers and payloads, and trace context headers.
#![allow(clippy::unwrap_used, missing_docs)]

use async_nats::{HeaderMap, Message};
use mesh_core::{call::decode_reply, trace_context};
use proptest::prelude::*;
use schemas::NodeName;

fn message(headers: Vec<(String, String)>, payload: Vec<u8>) -> Message {
    let mut map = HeaderMap::new();
    for (k, v) in &headers {
        map.insert(k.as_str(), v.as_str());
    }
    Message {
        subject: "_INBOX.x".into(),
        reply: None,
        payload: payload.into(),
        headers: Some(map),
        status: None,
        description: None,
        length: 0,
    }
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Nats-Service-Error-Code".to_string()),
        Just("Nats-Service-Error".to_string()),
        Just("traceparent".to_string()),
        Just("tracestate".to_string()),
        "[A-Za-z-]{1,12}",
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,60}",
        "00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]",
        // W3C-shaped, with any (also multi-byte) text where the fields are cut.
        "[0-9a-f]{2}-[0-9a-fé]{28,34}-[0-9a-f\\PC]{14,18}-[0-9a-f]{2}(-\\PC{0,5})?",
        "\\PC{50,60}",
        "[0-9]{0,6}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn reply_messages_never_panic(
        headers in prop::collection::vec((header_name(), header_value()), 0..4),
        payload in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let node = NodeName::new("X").unwrap();
        match decode_reply(&node, &message(headers, payload)) {
            Ok(reply) => prop_assert!(reply.count() >= 1),
            Err((code, text)) => prop_assert!(!text.is_empty() && code > 0),
        }
    }

    #[test]
    fn a_traceparent_of_any_text_never_panics(
        t in prop_oneof!["[0-9a-fé-]{50,60}", "\\PC{0,70}"],
        state in proptest::option::of("\\PC{0,20}"),
    ) {
        if let Some(lite) = trace_context::TraceContext::parse(&t, state.as_deref(), None) {
            prop_assert_eq!(lite.traceparent().len(), 55);
        }
    }

    #[test]
    fn trace_context_headers_never_panic(headers in prop::collection::vec((header_name(), header_value()), 0..4)) {
        let msg = message(headers, Vec::new());
        let _ = trace_context::extract(msg.headers.as_ref());
        if let Some(lite) = trace_context::TraceContext::from_headers(msg.headers.as_ref()) {
            prop_assert_eq!(lite.traceparent().len(), 55);
        }
    }
}
