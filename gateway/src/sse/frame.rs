//! Every byte the gateway writes on an event stream is rendered here.

use bytes::Bytes;
use schemas::sse::{BusEvent, LaggedEvent, SseEvent, TopologyEvent};

/// `event: status` with its `id:`; `data` is a status event as JSON.
pub fn status(id: u64, data: &str) -> Bytes {
    Bytes::from(format!(
        "id: {id}\nevent: {}\ndata: {data}\n\n",
        SseEvent::Status.name()
    ))
}

/// `event: status` with its `id:`, its data `event` encoded as JSON straight into the
/// frame (one buffer, no intermediate text).
pub fn status_of(id: u64, event: &impl serde::Serialize) -> Result<Bytes, serde_json::Error> {
    use std::io::Write;
    let mut frame = Vec::with_capacity(320);
    // Writing into a Vec cannot fail.
    let _ = write!(
        frame,
        "id: {id}\nevent: {}\ndata: ",
        SseEvent::Status.name()
    );
    serde_json::to_writer(&mut frame, event)?;
    frame.extend_from_slice(b"\n\n");
    Ok(Bytes::from(frame))
}

/// An event without `id:` (live only, never replayed).
fn control(kind: SseEvent, data: &impl serde::Serialize) -> Bytes {
    // These payloads are plain structs of strings and numbers: serialising cannot fail.
    let data = serde_json::to_string(data).unwrap_or_default();
    Bytes::from(format!("event: {}\ndata: {data}\n\n", kind.name()))
}

/// `event: topology`.
pub fn topology(event: &TopologyEvent) -> Bytes {
    control(SseEvent::Topology, event)
}

/// `event: bus`.
pub fn bus(connected: bool, gateway: &str) -> Bytes {
    control(
        SseEvent::Bus,
        &BusEvent {
            connected,
            gateway: gateway.to_string(),
        },
    )
}

/// `event: lagged`: events after `after` are gone for this client.
pub fn lagged(after: u64) -> Bytes {
    control(SseEvent::Lagged, &LaggedEvent::after(after))
}

/// The reconnection delay hint, first on every stream.
pub fn retry(millis: u128) -> Bytes {
    Bytes::from(format!("retry: {millis}\n\n"))
}

/// The comment sent on idle streams.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_well_formed() {
        assert_eq!(
            status(7, "{}"),
            Bytes::from_static(b"id: 7\nevent: status\ndata: {}\n\n")
        );
        assert_eq!(
            bus(true, "gw-1"),
            Bytes::from_static(b"event: bus\ndata: {\"connected\":true,\"gateway\":\"gw-1\"}\n\n")
        );
        let lag = String::from_utf8(lagged(3).to_vec()).unwrap();
        assert!(
            lag.starts_with("event: lagged\ndata: {\"after\":3,"),
            "{lag}"
        );
        assert_eq!(retry(2000), Bytes::from_static(b"retry: 2000\n\n"));
    }
}
