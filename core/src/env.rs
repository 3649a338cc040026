//! Renamed environment variables: an option whose current variable is unset still
//! reads its old name, for one release, and the process says so in its log.

use std::ffi::OsStr;

/// Old name and current name of one renamed variable.
pub type Renamed = (&'static str, &'static str);

/// The NATS options' names before they took the `nats` CLI's names.
pub const NATS_RENAMED: &[Renamed] = &[
    ("NATS_TLS_CA", "NATS_CA"),
    ("NATS_TLS_CERT", "NATS_CERT"),
    ("NATS_TLS_KEY", "NATS_KEY"),
];

/// Parses the command line and the environment into `C`. For each pair in `renamed`
/// whose current name is unset and whose old name is set, the option reads the old
/// name. Returns the options and one notice per old name in use, to be logged once
/// logging is up. Exits with clap's message on invalid input, like `C::parse`.
pub fn parse<C: clap::Parser>(renamed: &[Renamed]) -> (C, Vec<String>) {
    let mut command = C::command();
    let mut notices = Vec::new();
    for &(old, new) in renamed {
        if std::env::var_os(new).is_some() || std::env::var_os(old).is_none() {
            continue;
        }
        let id = command
            .get_arguments()
            .find(|arg| arg.get_env() == Some(OsStr::new(new)))
            .map(|arg| arg.get_id().clone());
        if let Some(id) = id {
            command = command.mut_arg(id, |arg| arg.env(old));
            notices.push(format!(
                "the environment variable {old} is deprecated and will be ignored in the next release: rename it {new}"
            ));
        }
    }
    let matches = command.get_matches();
    let options = C::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    (options, notices)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Options {
        #[command(flatten)]
        nats: crate::bus::NatsArgs,
    }

    #[test]
    fn every_renamed_nats_option_exists_under_its_new_name() {
        let command = Options::command();
        for (_, new) in NATS_RENAMED {
            assert!(
                command
                    .get_arguments()
                    .any(|a| a.get_env() == Some(OsStr::new(new))),
                "{new}"
            );
        }
    }
}
