//! comms-archiver archives employees' mobile communications (SMS, MMS, voice calls, WhatsApp,
//! CellTrust SL2) from partner archivers into folders of their mailboxes, where retention,
//! Litigation Hold and eDiscovery apply. It does the job of Microsoft Purview's partner data
//! connectors, self-hosted, and reports every day in a status log that adds up.
//!
//! # Layout
//!
//! One module per stage of the flow; the pipeline knows only the traits. Each component owns
//! its section of the configuration; `docs/architecture.md` tells the flow, the rooms, and
//! where a new partner, mailbox backend or stage backend goes.
//!
//! - [`cli`]: the command line: definitions, and each command's body in a room of its own.
//! - [`assemble`]: the composition root, a validated configuration to a ready archiver.
//! - [`config`]: the file as a whole: loading, environment overrides, the locator (errors name
//!   file, line, key), and the call to each section's validation.
//! - [`checks`], [`secret`]: the small checks every section shares; secret references and
//!   their resolver.
//! - [`scheduler`]: the daily wake, the days still to do, backfill (`[schedule]`).
//! - [`pipeline`]: one connector-day, end to end (`[archiver]`).
//! - [`item`]: the normalized [`item::Item`] every partner adapter produces.
//! - [`sources`]: the [`sources::Source`] trait, transports, and one module per partner with
//!   its descriptor in [`sources::partner::REGISTRY`] (`[connectors.<name>]`).
//! - [`mapping`]: participants to mailboxes (custom CSV first, then the email property), E.164
//!   (`[mapping]`).
//! - [`render`]: an item to RFC 5322 bytes, deterministic and injection-proof.
//! - [`message_bytes`]: where a raw message's header block ends and what its fields hold.
//! - [`stage`]: the [`stage::Stage`] trait (create-only object store) and its backends
//!   (`[stage]`).
//! - [`mailbox`]: the [`mailbox::Mailbox`] trait (folder per connector under the Inbox) and
//!   backends (`[mailbox]`).
//! - [`ledger`]: what was imported where, day states and checkpoints, kept through the stage;
//!   the day session that runs the day protocol.
//! - [`alerts`]: the digest of what needs a person, by email and webhook (`[alerts]`).
//! - [`retry`]: the one retry policy and backoff; [`events`]: the events that reach logs,
//!   metrics and the status log at once.
//! - [`report`], [`incidents`]: the daily status log whose counts add up; what a day
//!   recovered from.
//! - [`telemetry`], [`http_server`]: logging, metrics, and the health and metrics endpoint
//!   (`[telemetry]`).
//!
//! The partner simulator, the workload generator and Azurite's development account live in
//! the `comms-archiver-testkit` crate (`testkit/`), out of the daemon.

pub mod alerts;
pub mod assemble;
pub mod checks;
pub mod cli;
pub mod config;
pub mod events;
pub mod http_server;
pub mod incidents;
pub mod intake;
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
