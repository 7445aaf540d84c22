//! The command line: `run`, `once`, `check`, `report`.

use crate::config::Config;
use crate::pipeline::{build_stage, Archiver};
use crate::report::StatusLog;
use crate::telemetry::LogFormat;
use crate::{ledger::Ledger, scheduler, Error, Result};
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
    /// Validate the configuration and the mapping files, then exit.
    Check,
    /// Print the status log of a day (default: yesterday, UTC).
    Report {
        #[arg(long)]
        date: Option<NaiveDate>,
        #[arg(long)]
        connector: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: ReportFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
    Csv,
}

/// Exit code: everything done.
pub const EXIT_DONE: i32 = 0;
/// Exit code: work remains that a later run retries.
pub const EXIT_RETRY: i32 = 1;

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
            "the configuration",
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
        Command::Check => {
            let archiver = Archiver::from_config(&config)?;
            for (name, c) in config.enabled_connectors() {
                let source = &archiver
                    .connectors()
                    .iter()
                    .find(|x| x.name == name)
                    .expect("built from the same config")
                    .source;
                println!(
                    "connector {name}: partner {}, folder \"{}\", {}",
                    c.partner.as_str(),
                    c.folder(),
                    source.describe()
                );
            }
            println!("configuration {} is valid", cli.config.display());
            Ok(EXIT_DONE)
        }
        Command::Once { date, connector } => {
            check_connector(&config, connector.as_deref())?;
            let archiver = Archiver::from_config(&config)?;
            let day = date.unwrap_or_else(yesterday);
            let results = archiver.run_days(&[day], connector.as_deref()).await;
            Ok(if results.iter().all(|r| r.is_complete()) {
                EXIT_DONE
            } else {
                EXIT_RETRY
            })
        }
        Command::Run => {
            let archiver = Archiver::from_config(&config)?;
            let (tx, rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                shutdown_signal().await;
                let _ = tx.send(true);
            });
            scheduler::run(&archiver, &config, rx).await?;
            Ok(EXIT_DONE)
        }
        Command::Report {
            date,
            connector,
            format,
        } => {
            check_connector(&config, connector.as_deref())?;
            let day = date.unwrap_or_else(yesterday);
            let ledger = Ledger::new(build_stage(&config));
            let mut logs: Vec<StatusLog> = Vec::new();
            for (name, _) in config
                .enabled_connectors()
                .filter(|(n, _)| connector.as_deref().is_none_or(|c| c == *n))
            {
                match ledger.read_report(name, day).await? {
                    Some(log) => logs.push(log),
                    None => eprintln!("no status log for connector {name} on {day} yet"),
                }
            }
            if logs.is_empty() {
                return Err(Error::Usage(format!(
                    "no status log for {day}: run `comms-archiver once --date {day}` first"
                )));
            }
            print!("{}", render_logs(&logs, format));
            Ok(EXIT_DONE)
        }
    }
}

/// The logs in the requested format. JSON is one object for one log, an array for several.
pub fn render_logs(logs: &[StatusLog], format: ReportFormat) -> String {
    match format {
        ReportFormat::Table => logs
            .iter()
            .map(StatusLog::to_table)
            .collect::<Vec<_>>()
            .join("\n"),
        ReportFormat::Json => {
            let json = if logs.len() == 1 {
                serde_json::to_string_pretty(&logs[0])
            } else {
                serde_json::to_string_pretty(logs)
            };
            json.expect("status logs serialize") + "\n"
        }
        ReportFormat::Csv => {
            let mut out = String::new();
            for (i, log) in logs.iter().enumerate() {
                let csv = log.to_csv();
                // One header for all connectors.
                out.push_str(if i == 0 {
                    &csv
                } else {
                    csv.split_once('\n').map_or("", |x| x.1)
                });
            }
            out
        }
    }
}

/// Resolves on SIGTERM (systemd, containers) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
