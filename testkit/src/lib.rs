//! What comms-archiver is tested, demonstrated and benchmarked with, kept out of the
//! production daemon:
//!
//! - [`simulator`]: a partner simulator serving every partner contract on loopback (binary
//!   `comms-archiver-sim`), its routes read from the partners' descriptors.
//! - [`smtp`]: a day of TeleMessage's email sent over SMTP, as its SMTP destination would
//!   (`comms-archiver-sim --smtp-to`).
//! - [`workload`]: a realistic generated business day for benchmarks and chaos runs.
//! - [`azurite`]: Azurite's public development account and an account SAS for it (binary
//!   `comms-archiver-azurite-sas`).

pub mod azurite;
pub mod simulator;
pub mod smtp;
pub mod workload;
