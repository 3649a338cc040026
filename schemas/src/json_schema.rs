//! JSON Schema documents of the messages (and of the document a function receives), written to `schemas/json/`.
//!
//! `cargo test -p schemas` fails when the files drift from the types;
//! `UPDATE_SCHEMAS=1 cargo test -p schemas` rewrites them.

use schemars::schema_for;

use crate::{activation::FunctionInput, ActivationReply, ActivationRequest, StatusEvent};

/// Each message's schema file name and pretty-printed JSON Schema.
pub fn documents() -> Vec<(&'static str, String)> {
    let pretty = |schema: schemars::Schema| {
        // A schema is a JSON value: serialising it cannot fail.
        serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
    };
    vec![
        (
            "activation-request.schema.json",
            pretty(schema_for!(ActivationRequest)),
        ),
        (
            "activation-reply.schema.json",
            pretty(schema_for!(ActivationReply)),
        ),
        ("status-event.schema.json", pretty(schema_for!(StatusEvent))),
        (
            "function-input.schema.json",
            pretty(schema_for!(FunctionInput)),
        ),
        (
            "activation-record.schema.json",
            pretty(schema_for!(crate::record::ActivationRecord)),
        ),
        (
            "function-record.schema.json",
            pretty(schema_for!(crate::function::FunctionRecord)),
        ),
        ("job.schema.json", pretty(schema_for!(crate::job::Job))),
        (
            "trigger.schema.json",
            pretty(schema_for!(crate::trigger::Trigger)),
        ),
        (
            "job-record.schema.json",
            pretty(schema_for!(crate::job::JobRecord)),
        ),
        (
            "job-submit.schema.json",
            pretty(schema_for!(crate::job::Submit)),
        ),
        (
            "job-accepted.schema.json",
            pretty(schema_for!(crate::job::Accepted)),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn schema_files_are_current() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("json");
        let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
        for (file, text) in super::documents() {
            let path = dir.join(file);
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &text).unwrap();
            }
            let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                on_disk == text,
                "{} is out of date: run `UPDATE_SCHEMAS=1 cargo test -p schemas`",
                path.display()
            );
        }
    }
}
