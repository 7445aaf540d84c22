//! The command line: its definitions here, each command's body in a room of its own
//! (`check`, `report`, and the commands that process days in `work`).

mod check;
mod report;
mod summary;
mod trace;
mod work;

pub use report::render_logs;

use crate::config::Config;
use crate::telemetry::{self, LogFormat};
use crate::{Error, Result};
use chrono::{NaiveDate, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// What `--help` ends with: examples, and what the exit codes mean.
const AFTER_HELP: &str = "\
Examples:
  comms-archiver once --config config/demo.toml --date 2026-11-20
  comms-archiver report --config config/demo.toml --date 2026-11-20 --connector o2
  comms-archiver trace O2-20261120-0001 --config config/demo.toml --date 2026-11-20
  comms-archiver redrive --config /etc/comms-archiver/config.toml --from 2026-11-01 --to 2026-11-20
  comms-archiver check --config /etc/comms-archiver/config.toml --connect
  comms-archiver run --config /etc/comms-archiver/config.toml

Exit codes:
  0  everything done, nothing left for anyone
  1  work remains that a later run retries (a partner not delivered yet, a mailbox
     unavailable, a record to correct), or a check found a problem
  2  bad usage or configuration; the message names the file, the line and the key
  3  every day is complete, but copies are held or failed for good and need a person
     (`report` and `trace` say which and why)";

/// Archives partner mobile communications (SMS, voice, WhatsApp, CellTrust) into mailboxes.
#[derive(Debug, Parser)]
#[command(name = "comms-archiver", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        long,
        global = true,
        env = "COMMS_ARCHIVER_CONFIG",
        default_value = "/etc/comms-archiver/config.toml"
    )]
    pub config: PathBuf,
    /// How log lines are written (to stderr).
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub log_format: LogFormat,
    /// Fewer log lines: -q warnings and errors only, -qq errors only.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,
    /// More log lines: -v debug, -vv trace. RUST_LOG, when set, decides instead.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as a daemon: wake daily and process every day from the checkpoint to yesterday.
    Run,
    /// Process one day (default: yesterday, UTC) and exit, with a summary on stdout.
    Once {
        /// The day, YYYY-MM-DD (UTC), yesterday or earlier.
        #[arg(long, value_parser = past_day)]
        date: Option<NaiveDate>,
        /// Only this connector.
        #[arg(long)]
        connector: Option<String>,
    },
    /// Process every day from --from to --to (inclusive), skipping days already complete;
    /// resumable after an interruption.
    Backfill {
        /// The first day, YYYY-MM-DD (UTC).
        #[arg(long, value_parser = past_day)]
        from: NaiveDate,
        /// The last day, YYYY-MM-DD (UTC), yesterday or earlier.
        #[arg(long, value_parser = past_day)]
        to: NaiveDate,
        /// Only this connector.
        #[arg(long)]
        connector: Option<String>,
    },
    /// Deliver the held copies that can now be delivered (the mapping CSV fixed, the mailbox
    /// created, the size limit raised), of one day (default: yesterday, UTC) or of every day
    /// from --from to --to; each copy exactly once. Only complete days: an open day's next
    /// run reads its whole delivery again.
    Redrive {
        /// The day, YYYY-MM-DD (UTC), yesterday or earlier.
        #[arg(long, conflicts_with_all = ["from", "to"], value_parser = past_day)]
        date: Option<NaiveDate>,
        /// The first day of a range, YYYY-MM-DD (with --to).
        #[arg(long, requires = "to", value_parser = past_day)]
        from: Option<NaiveDate>,
        /// The last day of a range, YYYY-MM-DD (with --from).
        #[arg(long, requires = "from", value_parser = past_day)]
        to: Option<NaiveDate>,
        /// Only this connector.
        #[arg(long)]
        connector: Option<String>,
    },
    /// Validate the configuration and the mapping files, then exit; with --verify-stage,
    /// also re-read the staged messages of items of that date and compare them with the
    /// ledger's SHA-256.
    Check {
        /// Also sign in to every partner and mailbox backend, and say for each whether it
        /// answered.
        #[arg(long, conflicts_with = "verify_stage")]
        connect: bool,
        /// Re-read the staged messages of items dated --date and compare them with the
        /// SHA-256 the ledger recorded at import.
        #[arg(long, requires = "date")]
        verify_stage: bool,
        /// The date for --verify-stage, YYYY-MM-DD.
        #[arg(long, value_parser = day)]
        date: Option<NaiveDate>,
        /// Only this connector.
        #[arg(long)]
        connector: Option<String>,
    },
    /// Ask the running daemon's endpoint (telemetry.listen) for /healthz; exit 0 when healthy.
    Healthcheck,
    /// Print a day's reconciliation (default: yesterday, UTC): the day as a whole over every
    /// run, derived from the run logs and the import records; with --runs, each run's log.
    Report {
        /// The day, YYYY-MM-DD.
        #[arg(long, value_parser = day)]
        date: Option<NaiveDate>,
        /// Only this connector.
        #[arg(long)]
        connector: Option<String>,
        /// Each run's own run log instead of the reconciliation.
        #[arg(long)]
        runs: bool,
        /// With `--format html`: the first day of the page (default: --date).
        #[arg(long, value_parser = day)]
        from: Option<NaiveDate>,
        /// With `--format html`: the last day of the page (default: --date).
        #[arg(long, value_parser = day)]
        to: Option<NaiveDate>,
        /// `html` writes one self-contained page of the days (it names users: keep it among
        /// the admins).
        #[arg(long, value_enum, default_value = "table")]
        format: ReportFormat,
    },
    /// Find one item by its partner item id, its Message-ID or its item key, and print its
    /// way: each copy's mailbox, folder and mapping, its stage key and SHA-256, the run that
    /// imported it, and what every run of the days around --date did with it.
    Trace {
        /// The partner's item id, the Message-ID (with or without <>), or the item key.
        id: String,
        /// The day the item was delivered for, YYYY-MM-DD (its import records are looked
        /// for in the days around it).
        #[arg(long, value_parser = day)]
        date: NaiveDate,
        /// Only this connector.
        #[arg(long)]
        connector: Option<String>,
        /// `json` for one object per connector that knows the item.
        #[arg(long, value_enum, default_value = "table")]
        format: ReportFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
    Csv,
    Html,
}

/// Exit code: everything done.
pub const EXIT_DONE: i32 = 0;
/// Exit code: work remains that a later run retries.
pub const EXIT_RETRY: i32 = 1;
/// Exit code: bad usage or configuration, or an environment that `check` found wanting.
pub const EXIT_CONFIG: i32 = 2;
/// Exit code: every day is finished, but copies failed for good and need a person (a cron
/// job or systemd timer that alerts on a non-zero exit sees them).
pub const EXIT_ATTENTION: i32 = 3;

/// A day as the command line writes it, or what is wrong with it.
fn day(text: &str) -> std::result::Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|e| format!("'{text}' is not a day written YYYY-MM-DD, e.g. 2026-11-20 ({e})"))
}

/// A day that is over (UTC): the partners deliver a day once it has ended, so processing a
/// day after yesterday would find nothing, or only part of it.
fn past_day(text: &str) -> std::result::Result<NaiveDate, String> {
    let given = day(text)?;
    let today = Utc::now().date_naive();
    match given < today {
        true => Ok(given),
        false => Err(format!(
            "{given} is not over yet (today is {today} UTC): a day is processed once it has \
             ended, so give {} or earlier",
            yesterday()
        )),
    }
}

fn yesterday() -> NaiveDate {
    Utc::now()
        .date_naive()
        .pred_opt()
        .expect("a day before today")
}

fn check_connector(config: &Config, name: Option<&str>) -> Result<()> {
    match name {
        Some(n) if !config.enabled_connectors().any(|(c, _)| c == n) => Err(Error::Usage(format!(
            "no enabled connector named '{n}' in {}; configured: {}",
            config.file.display(),
            config
                .enabled_connectors()
                .map(|(c, _)| c)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        _ => Ok(()),
    }
}

/// Runs a parsed command line; returns the exit code.
pub async fn execute(cli: Cli) -> Result<i32> {
    let config = Config::load(&cli.config)?;
    match cli.command {
        Command::Check {
            verify_stage: true,
            date: Some(day),
            connector,
            ..
        } => check::verify_stage(&config, day, connector.as_deref()).await,
        Command::Check {
            connect, connector, ..
        } => check::environment(&config, connector.as_deref(), connect).await,
        Command::Once { date, connector } => {
            work::once(
                &config,
                date.unwrap_or_else(yesterday),
                connector.as_deref(),
            )
            .await
        }
        Command::Backfill {
            from,
            to,
            connector,
        } => work::backfill(&config, from, to, connector.as_deref()).await,
        Command::Redrive {
            date,
            from,
            to,
            connector,
        } => {
            let (from, to) = match (from, to) {
                (Some(from), Some(to)) => (from, to),
                _ => {
                    let day = date.unwrap_or_else(yesterday);
                    (day, day)
                }
            };
            work::redrive(&config, from, to, connector.as_deref()).await
        }
        Command::Run => work::run(&config).await,
        Command::Healthcheck => healthcheck(&config).await,
        Command::Report {
            date,
            connector,
            runs,
            from,
            to,
            format,
        } => {
            let day = date.unwrap_or_else(yesterday);
            match format {
                ReportFormat::Html => {
                    if runs {
                        return Err(Error::Usage(
                            "--runs prints run logs as a table, JSON or CSV, not html".into(),
                        ));
                    }
                    let (from, to) = (from.unwrap_or(day), to.unwrap_or(day));
                    report::html(&config, from, to, connector.as_deref()).await
                }
                _ if from.is_some() || to.is_some() => Err(Error::Usage(
                    "--from and --to go with --format html; give one day with --date".into(),
                )),
                _ => report::report(&config, day, connector.as_deref(), runs, format).await,
            }
        }
        Command::Trace {
            id,
            date,
            connector,
            format,
        } => trace::trace(&config, &id, date, connector.as_deref(), format).await,
    }
}

/// Asks the running daemon's endpoint for /healthz.
async fn healthcheck(config: &Config) -> Result<i32> {
    let addr = config.telemetry.listen.ok_or_else(|| {
        Error::Usage("telemetry.listen is not set, so there is no endpoint to ask".into())
    })?;
    Ok(match telemetry::get(addr, "/healthz").await {
        Ok((200, _)) => EXIT_DONE,
        Ok((status, body)) => {
            eprintln!("{addr}/healthz answered {status}: {}", body.trim());
            EXIT_RETRY
        }
        Err(e) => {
            eprintln!("{addr}/healthz: {e}");
            EXIT_RETRY
        }
    })
}
