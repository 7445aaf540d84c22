//! The command line: its definitions here, each command's body in a room of its own
//! (`check`, `report`, and the commands that process days in `work`).

mod check;
mod report;
mod trace;
mod work;

pub use report::render_logs;

use crate::config::Config;
use crate::telemetry::{self, LogFormat};
use crate::{Error, Result};
use chrono::{NaiveDate, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Archives partner mobile communications (SMS, voice, WhatsApp, CellTrust) into mailboxes.
#[derive(Debug, Parser)]
#[command(name = "comms-archiver", version, about)]
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
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as a daemon: wake daily and process every day from the checkpoint to yesterday.
    Run,
    /// Process one day (default: yesterday, UTC) and exit.
    Once {
        /// The day, YYYY-MM-DD.
        #[arg(long)]
        date: Option<NaiveDate>,
        /// Only this connector.
        #[arg(long)]
        connector: Option<String>,
    },
    /// Process every day from --from to --to (inclusive), skipping days already complete;
    /// resumable after an interruption.
    Backfill {
        #[arg(long)]
        from: NaiveDate,
        #[arg(long)]
        to: NaiveDate,
        #[arg(long)]
        connector: Option<String>,
    },
    /// Deliver the held copies that can now be delivered (the mapping CSV fixed, the mailbox
    /// created, the size limit raised), of one day (default: yesterday, UTC) or of every day
    /// from --from to --to; each copy exactly once. Only complete days: an open day's next
    /// run reads its whole delivery again.
    Redrive {
        /// The day, YYYY-MM-DD.
        #[arg(long, conflicts_with_all = ["from", "to"])]
        date: Option<NaiveDate>,
        /// The first day of a range, YYYY-MM-DD (with --to).
        #[arg(long, requires = "to")]
        from: Option<NaiveDate>,
        /// The last day of a range, YYYY-MM-DD (with --from).
        #[arg(long, requires = "from")]
        to: Option<NaiveDate>,
        /// Only this connector.
        #[arg(long)]
        connector: Option<String>,
    },
    /// Validate the configuration and the mapping files, then exit; with --verify-stage,
    /// also re-read the staged messages of items of that date and compare them with the
    /// ledger's SHA-256.
    Check {
        #[arg(long, requires = "date")]
        verify_stage: bool,
        #[arg(long)]
        date: Option<NaiveDate>,
        #[arg(long)]
        connector: Option<String>,
    },
    /// Ask the running daemon's endpoint (telemetry.listen) for /healthz; exit 0 when healthy.
    Healthcheck,
    /// Print a day's reconciliation (default: yesterday, UTC): the day as a whole over every
    /// run, derived from the run logs and the import records; with --runs, each run's log.
    Report {
        /// The day, YYYY-MM-DD.
        #[arg(long)]
        date: Option<NaiveDate>,
        /// Only this connector.
        #[arg(long)]
        connector: Option<String>,
        /// Each run's own run log instead of the reconciliation.
        #[arg(long)]
        runs: bool,
        /// With `--format html`: the first day of the page (default: --date).
        #[arg(long)]
        from: Option<NaiveDate>,
        /// With `--format html`: the last day of the page (default: --date).
        #[arg(long)]
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
        /// The day the item was delivered for (its import records are looked for in the
        /// days around it).
        #[arg(long)]
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
/// Exit code: every day is finished, but copies failed for good and need a person (a cron
/// job or systemd timer that alerts on a non-zero exit sees them).
pub const EXIT_ATTENTION: i32 = 3;

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
        } => check::verify_stage(&config, day, connector.as_deref()).await,
        Command::Check { .. } => check::configuration(&config),
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
