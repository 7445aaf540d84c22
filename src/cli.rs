//! The command line: `run`, `once`, `check`, `report`.

use crate::config::Config;
use crate::pipeline::{Archiver, DayResult};
use crate::report::StatusLog;
use crate::scheduler::{self, SystemClock};
use crate::telemetry::{self, LogFormat, RunState};
use crate::{ledger::Ledger, Error, Result};
use chrono::{NaiveDate, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use std::future::Future;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

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
    /// Print an account SAS for Azurite's public development account (for the Azurite demo
    /// and tests; never for a real account).
    AzuriteSas {
        /// Days until it expires.
        #[arg(long, default_value_t = 7)]
        days: i64,
    },
    /// Ask the running daemon's endpoint (telemetry.listen) for /healthz; exit 0 when healthy.
    Healthcheck,
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
    if let Command::AzuriteSas { days } = &cli.command {
        let expiry = Utc::now() + chrono::Duration::days(*days);
        println!(
            "{}",
            crate::stage::azure::account_sas(
                crate::stage::azure::DEV_ACCOUNT,
                crate::stage::azure::DEV_KEY,
                expiry
            )
        );
        return Ok(EXIT_DONE);
    }
    let config = Config::load(&cli.config)?;
    match cli.command {
        Command::AzuriteSas { .. } => unreachable!("answered above"),
        Command::Check {
            verify_stage: true,
            date: Some(day),
            connector,
        } => {
            check_connector(&config, connector.as_deref())?;
            let ledger = Ledger::new(crate::stage::build(&config)?);
            let mut clean = true;
            for (name, _) in config
                .enabled_connectors()
                .filter(|(n, _)| connector.as_deref().is_none_or(|c| c == *n))
            {
                let found = ledger.verify_day(name, day).await?;
                println!(
                    "{name} {day}: {} staged messages match the ledger, {} changed or missing, {} not imported yet",
                    found.matching,
                    found.mismatched.len(),
                    found.not_imported.len()
                );
                for problem in &found.mismatched {
                    println!("  MISMATCH {problem}");
                }
                for staged in &found.not_imported {
                    println!("  not imported yet: {staged}");
                }
                clean &= found.mismatched.is_empty();
            }
            Ok(if clean { EXIT_DONE } else { EXIT_RETRY })
        }
        Command::Check { .. } => {
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
            telemetry::metrics_handle();
            let stop = shutdown_on_signal();
            let archiver = Archiver::from_config(&config)?.with_shutdown(stop.clone());
            archiver.prepare().await?;
            let days = [date.unwrap_or_else(yesterday)];
            let work = archiver.run_days(&days, connector.as_deref());
            let results = within_grace(work, stop, grace(&config)).await;
            Ok(exit_code(results.as_deref()))
        }
        Command::Backfill {
            from,
            to,
            connector,
        } => {
            check_connector(&config, connector.as_deref())?;
            if from > to || to >= Utc::now().date_naive() {
                return Err(Error::Usage(format!(
                    "backfill needs --from <= --to and --to before today (UTC); got {from} to {to}"
                )));
            }
            telemetry::metrics_handle();
            let stop = shutdown_on_signal();
            let archiver = Archiver::from_config(&config)?.with_shutdown(stop.clone());
            archiver.prepare().await?;
            let work = backfill(&archiver, from, to, connector.as_deref());
            let results = within_grace(work, stop, grace(&config)).await;
            Ok(exit_code(results.as_deref()))
        }
        Command::Run => {
            let archiver = Archiver::from_config(&config)?;
            archiver.prepare().await?;
            telemetry::metrics_handle();
            let state = Arc::new(RunState::default());
            if let Some(addr) = config.telemetry.listen {
                let listener = telemetry::bind(addr)
                    .await
                    .map_err(|e| Error::Usage(e.to_string()))?;
                tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
                tokio::spawn(telemetry::serve(listener, state.clone()));
            }
            let stop = shutdown_on_signal();
            let archiver = Arc::new(archiver.with_shutdown(stop.clone()));
            scheduler::run(archiver, &config, Arc::new(SystemClock), stop, state).await?;
            Ok(EXIT_DONE)
        }
        Command::Healthcheck => {
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
        Command::Report {
            date,
            connector,
            format,
        } => {
            check_connector(&config, connector.as_deref())?;
            let day = date.unwrap_or_else(yesterday);
            let ledger = Ledger::new(crate::stage::build(&config)?);
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

fn grace(config: &Config) -> Duration {
    Duration::from_secs(config.schedule.shutdown_timeout_secs)
}

/// 0 when every connector-day finished, 1 when any is left for a later run (also when the
/// work was cut short by a shutdown).
fn exit_code(results: Option<&[DayResult]>) -> i32 {
    match results {
        Some(results) if results.iter().all(DayResult::is_complete) => EXIT_DONE,
        _ => EXIT_RETRY,
    }
}

/// Runs `work`; after a shutdown request it gets `grace` to finish, else it is dropped
/// (None). Dropping is safe: stage writes are create-only and the ledger is written after
/// the mailbox accepted a message, so the next run redoes exactly what is missing.
async fn within_grace<T>(
    work: impl Future<Output = T>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) -> Option<T> {
    tokio::pin!(work);
    tokio::select! {
        out = &mut work => Some(out),
        _ = scheduler::stopped(&mut stop) => match tokio::time::timeout(grace, &mut work).await {
            Ok(out) => Some(out),
            Err(_) => {
                tracing::warn!("in-flight work did not finish in time; the next run redoes it");
                None
            }
        },
    }
}

/// Every connector-day from `from` to `to` that is not complete yet, oldest first, with a
/// progress bar on a terminal and plain log lines otherwise.
async fn backfill(
    archiver: &Archiver,
    from: NaiveDate,
    to: NaiveDate,
    only: Option<&str>,
) -> Vec<DayResult> {
    let days: Vec<NaiveDate> = from.iter_days().take_while(|d| *d <= to).collect();
    let connectors: Vec<&str> = archiver
        .connectors()
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| only.is_none_or(|o| o == *n))
        .collect();
    let total = (days.len() * connectors.len()) as u64;
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} connector-days {msg}")
                .expect("a valid template"),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut results = Vec::new();
    for name in connectors {
        for &day in &days {
            bar.set_message(format!("{name} {day}"));
            let done = archiver
                .ledger()
                .is_complete(name, day)
                .await
                .unwrap_or(false);
            if done {
                tracing::info!(connector = name, day = %day, "already complete; skipped");
            } else {
                results.extend(archiver.run_days(&[day], Some(name)).await);
            }
            bar.inc(1);
            if archiver.is_shutting_down() {
                bar.abandon_with_message("interrupted; run the same backfill again to resume");
                return results;
            }
        }
    }
    bar.finish_with_message("done");
    results
}

/// A channel that turns true on SIGTERM (systemd, containers) or SIGINT (Ctrl-C).
fn shutdown_on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        let _ = tx.send(true);
    });
    rx
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
