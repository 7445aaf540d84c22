//! comms-archiver archives employees' mobile communications (SMS, MMS, voice calls, WhatsApp,
//! CellTrust SL2) from partner archivers into folders of their mailboxes, where retention,
//! Litigation Hold and eDiscovery apply. It does the job of Microsoft Purview's partner data
//! connectors, self-hosted, and reports every day in a status log that adds up.
//!
//! # Layout
//!
//! One module per stage of the flow; the pipeline knows only the traits.
//!
//! - [`config`]: the TOML file, environment overrides and validation (errors name file, line, key).
//! - [`item`]: the normalized [`item::Item`] every partner adapter produces.
//! - [`sources`]: the [`sources::Source`] trait, transports, and one module per partner.
//! - [`mapping`]: participants to mailboxes (custom CSV first, then the email property), E.164.
//! - [`render`]: an item to RFC 5322 bytes, deterministic and injection-proof.
//! - [`message_bytes`]: where a raw message's header block ends and what its fields hold.
//! - [`stage`]: the [`stage::Stage`] trait (create-only object store) and its backends.
//! - [`mailbox`]: the [`mailbox::Mailbox`] trait (folder per connector under the Inbox) and backends.
//! - [`ledger`]: what was imported where, day states and checkpoints, kept through the stage.
//! - [`report`]: the daily status log (JSON and CSV) whose counts add up.
//! - [`pipeline`]: one connector-day, end to end.
//! - [`scheduler`]: the daily wake and the days still to do.
//! - [`telemetry`]: logging, metrics, and the health and metrics endpoint.
//! - [`simulator`]: a partner simulator serving every partner contract on loopback.
//! - [`http_server`]: the small HTTP/1.1 server behind the endpoint and the simulator.
//! - [`workload`]: a realistic generated business day for benchmarks and chaos runs.
//! - [`cli`]: the command line.

pub mod checks;
pub mod cli;
pub mod config;
pub mod events;
pub mod http_server;
pub mod incidents;
pub mod item;
pub mod ledger;
pub mod mailbox;
pub mod mapping;
pub mod message_bytes;
pub mod pipeline;
pub mod render;
pub mod report;
pub mod retry;
pub mod scheduler;
pub mod secret;
pub mod sources;
pub mod stage;
pub mod telemetry;

/// Installs the process's TLS crypto provider (ring). Every HTTPS and IMAP client needs it
/// before it is built: `main` calls it once at start, as must any other program (or test)
/// that builds clients of this library. Safe to call any number of times.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Every error the library reports; each says where and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file or an override is wrong.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A key's value cannot be used as given (an unreadable secret, say).
    #[error(transparent)]
    Setting(#[from] secret::SettingError),
    /// A mapping CSV is wrong.
    #[error(transparent)]
    Mapping(#[from] mapping::MappingError),
    /// The stage could not be read or written.
    #[error(transparent)]
    Stage(#[from] stage::StageError),
    /// A stored ledger, report or checkpoint could not be understood.
    #[error("{0}")]
    State(String),
    /// The command line asked for something impossible.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// The process exit code for this error: 2 for configuration and usage, 1 otherwise
    /// (work remains that a later run retries).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Setting(_) | Error::Mapping(_) | Error::Usage(_) => 2,
            Error::Stage(_) | Error::State(_) => 1,
        }
    }
}

/// Crate-wide result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
