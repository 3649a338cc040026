//! A finished activation to keep, as the route or task that ran it hands it over: its
//! record's fields, with its reply tree decoded or as the JSON a client was answered
//! with (see [`crate::activations::Kept::keep`]).

use bytes::Bytes;
use schemas::{
    record::{ActivationRecord, ActivationSummary, RecordedRequest},
    ActivationReply,
};

use crate::timeline::Timeline;

/// A finished activation to keep: its record's fields, in the record's JSON form, but
/// the timeline, as it was noted, and the reply tree, given decoded or as the JSON it was
/// answered with.
#[derive(Clone, serde::Serialize)]
pub struct Finished {
    /// As in [`ActivationRecord`].
    #[serde(flatten)]
    pub summary: ActivationSummary,
    /// As in [`ActivationRecord`].
    pub request: RecordedRequest,
    /// As in [`ActivationRecord`], its marks' JSON as noted (not in this JSON form: the
    /// writer puts it in).
    #[serde(skip)]
    pub timeline: Timeline,
    /// As in [`ActivationRecord`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// As in [`ActivationRecord`].
    pub gateway: String,
    /// The reply tree (not in this JSON form: the writer puts it in).
    #[serde(skip)]
    pub reply: KeptReply,
}

/// The reply tree of a finished activation.
#[derive(Clone)]
pub enum KeptReply {
    /// Decoded.
    Tree(ActivationReply),
    /// As JSON: the bytes a client was answered with, put in the record as they are.
    Json(Bytes),
}

impl Finished {
    /// The record, its tree decoded when given as JSON (`None` if that JSON is no tree).
    pub fn into_record(self) -> Option<ActivationRecord> {
        let reply = match self.reply {
            KeptReply::Tree(reply) => reply,
            KeptReply::Json(json) => serde_json::from_slice(&json).ok()?,
        };
        Some(ActivationRecord {
            summary: self.summary,
            request: self.request,
            reply,
            timeline: self.timeline.marks(),
            trace_id: self.trace_id,
            gateway: self.gateway,
        })
    }
}
