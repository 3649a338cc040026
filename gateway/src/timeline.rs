//! An activation's timeline as it is noted: each mark written as its JSON when its status
//! event arrives, so that keeping the record puts the marks in as they are (no mark is
//! built, held as owned strings, or encoded again per activation).

use schemas::{record::TimelineMark, NodeState};

/// The marks of one activation, oldest first: the JSON of each [`TimelineMark`] (as
/// serde encodes it), comma-separated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timeline {
    json: Vec<u8>,
    marks: usize,
}

/// Room made for a new timeline's JSON: the seed's 16 marks take about 1.2 KB.
const FIRST_CAPACITY: usize = 1024;

impl Timeline {
    /// An empty timeline with room for a few marks.
    pub fn new() -> Self {
        Self {
            json: Vec::with_capacity(FIRST_CAPACITY),
            marks: 0,
        }
    }

    /// How many marks it holds.
    pub fn len(&self) -> usize {
        self.marks
    }

    /// Whether it holds no mark.
    pub fn is_empty(&self) -> bool {
        self.marks == 0
    }

    /// Notes that `node` reported `state`, `offset_us` microseconds after the activation
    /// was sent, from replica `instance`.
    pub fn note(&mut self, node: &str, state: NodeState, offset_us: u64, instance: Option<&str>) {
        let out = &mut self.json;
        if self.marks > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"node\":");
        push_str(out, node);
        out.extend_from_slice(b",\"state\":\"");
        out.extend_from_slice(state.as_str().as_bytes());
        out.extend_from_slice(b"\",\"offset_us\":");
        out.extend_from_slice(itoa::Buffer::new().format(offset_us).as_bytes());
        if let Some(instance) = instance {
            out.extend_from_slice(b",\"instance\":");
            push_str(out, instance);
        }
        out.push(b'}');
        self.marks += 1;
    }

    /// Writes the marks as a JSON array (what serde writes for `Vec<TimelineMark>`).
    pub fn write_array(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        out.extend_from_slice(&self.json);
        out.push(b']');
    }

    /// The marks, decoded (for a record read from memory).
    pub fn marks(&self) -> Vec<TimelineMark> {
        let mut array = Vec::with_capacity(self.json.len() + 2);
        self.write_array(&mut array);
        // Written here from valid names and escaped strings: it decodes.
        serde_json::from_slice(&array).unwrap_or_default()
    }
}

impl From<&[TimelineMark]> for Timeline {
    fn from(marks: &[TimelineMark]) -> Self {
        let mut timeline = Self::new();
        for m in marks {
            timeline.note(m.node.as_str(), m.state, m.offset_us, m.instance.as_deref());
        }
        timeline
    }
}

/// Writes `s` as a JSON string: as it is when nothing in it needs an escape (printable
/// ASCII but `"` and `\`, as names and most instances are), else escaped by serde_json.
fn push_str(out: &mut Vec<u8>, s: &str) {
    // Folded without an early exit, so that the check runs over many bytes at a time.
    let plain = s.bytes().fold(true, |plain, b| {
        plain & (0x20..0x7f).contains(&b) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing to a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

#[cfg(test)]
mod tests {
    use schemas::NodeName;

    use super::*;

    fn mark(node: &str, state: NodeState, offset_us: u64, instance: Option<&str>) -> TimelineMark {
        TimelineMark {
            node: NodeName::new(node).unwrap(),
            state,
            offset_us,
            instance: instance.map(str::to_string),
        }
    }

    /// The JSON noted is serde's for the same marks, whatever the instances hold.
    #[test]
    fn a_timeline_is_written_as_serde_writes_its_marks() {
        let marks = vec![
            mark("UI", NodeState::Running, 0, Some("seed-1")),
            mark("D", NodeState::Ok, u64::MAX, None),
            mark(
                "V-2_x",
                NodeState::Failed,
                12,
                Some("a \"quoted\" \\ \u{1} é 😀"),
            ),
            mark("T", NodeState::Idle, 7, Some("")),
            mark("H", NodeState::Manual, 1, Some("\u{7f}")),
        ];
        let timeline = Timeline::from(marks.as_slice());
        assert_eq!(timeline.len(), marks.len());
        let mut written = Vec::new();
        timeline.write_array(&mut written);
        assert_eq!(
            String::from_utf8(written).unwrap(),
            serde_json::to_string(&marks).unwrap()
        );
        assert_eq!(timeline.marks(), marks);
    }

    #[test]
    fn an_empty_timeline_is_an_empty_array() {
        let timeline = Timeline::new();
        assert!(timeline.is_empty());
        let mut written = Vec::new();
        timeline.write_array(&mut written);
        assert_eq!(written, b"[]");
        assert_eq!(timeline.marks(), Vec::new());
    }
}
