//! The commands that process days: `once`, `backfill` and the daemon, `run`. Each stops on
//! SIGTERM or SIGINT, giving in-flight work `schedule.shutdown_timeout_secs` to finish.

use super::summary::summary;
use super::{check_connector, EXIT_ATTENTION, EXIT_DONE, EXIT_RETRY};
use crate::config::Config;
use crate::pipeline::{Archiver, DayResult};
use crate::scheduler::{self, SystemClock};
use crate::telemetry::{self, RunState};
use crate::{Error, Result};
use chrono::{NaiveDate, Utc};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// An archiver built from `config` and made ready, stopping on SIGTERM or SIGINT, with
/// metrics recorded: what every command that processes days starts with.
async fn ready(config: &Config) -> Result<(Archiver, watch::Receiver<bool>)> {
    telemetry::metrics_handle();
    let stop = shutdown_on_signal();
    let archiver = Archiver::from_config(config)?.with_shutdown(stop.clone());
    archiver.prepare().await?;
    Ok((archiver, stop))
}

/// `once`: one day of every enabled connector (or the one named).
pub(super) async fn once(config: &Config, day: NaiveDate, only: Option<&str>) -> Result<i32> {
    check_connector(config, only)?;
    let (archiver, stop) = ready(config).await?;
    let days = [day];
    let started = Utc::now();
    let work = archiver.run_days(&days, only);
    let results = within_grace(work, stop, config.schedule.grace()).await;
    archiver.send_digest(&days, started).await;
    if let Some(results) = &results {
        print!("{}", summary(config, &archiver, results).await);
    }
    Ok(exit_code(results.as_deref()))
}

/// `backfill`: every day from `from` to `to` not complete yet.
pub(super) async fn backfill(
    config: &Config,
    from: NaiveDate,
    to: NaiveDate,
    only: Option<&str>,
) -> Result<i32> {
    check_connector(config, only)?;
    if from > to || to >= Utc::now().date_naive() {
        return Err(Error::Usage(format!(
            "backfill needs --from <= --to and --to before today (UTC); got {from} to {to}"
        )));
    }
    let (archiver, stop) = ready(config).await?;
    let started = Utc::now();
    let work = scheduler::backfill(&archiver, from, to, only);
    let results = within_grace(work, stop, config.schedule.grace()).await;
    let days: Vec<NaiveDate> = from.iter_days().take_while(|d| *d <= to).collect();
    archiver.send_digest(&days, started).await;
    if let Some(results) = &results {
        print!("{}", summary(config, &archiver, results).await);
    }
    Ok(exit_code(results.as_deref()))
}

/// `redrive`: the held copies of every complete day from `from` to `to` that can now be
/// delivered. Exits 0 when nothing is held any more, 3 when copies stay held (the digest
/// and `report` say why), 1 when a re-drive could not finish.
pub(super) async fn redrive(
    config: &Config,
    from: NaiveDate,
    to: NaiveDate,
    only: Option<&str>,
) -> Result<i32> {
    check_connector(config, only)?;
    if from > to {
        return Err(Error::Usage(format!(
            "redrive needs --from <= --to; got {from} to {to}"
        )));
    }
    let (archiver, stop) = ready(config).await?;
    let started = Utc::now();
    let days: Vec<NaiveDate> = from.iter_days().take_while(|d| *d <= to).collect();
    let work = archiver.redrive_days(&days, only);
    let results = within_grace(work, stop, config.schedule.grace()).await;
    archiver.send_digest(&days, started).await;
    let Some(results) = results else {
        return Ok(EXIT_RETRY);
    };
    let mut code = EXIT_DONE;
    for r in &results {
        match &r.log {
            Err(_) => code = EXIT_RETRY,
            Ok(Some(log)) => {
                let delivered: usize = log.redriven.iter().map(|d| d.delivered.len()).sum();
                println!(
                    "{} {}: {} delivered, {} still held{}",
                    r.connector,
                    r.day,
                    crate::report::counted(delivered as u64, "held copy", "held copies"),
                    log.held,
                    match log.errors.is_empty() {
                        true => String::new(),
                        false => format!(", stopped by {}", log.run_stops()),
                    }
                );
                if !log.errors.is_empty() {
                    code = EXIT_RETRY;
                } else if !log.held_copies.is_empty() && code == EXIT_DONE {
                    code = EXIT_ATTENTION;
                }
            }
            Ok(None) => {}
        }
    }
    Ok(code)
}

/// `run`: the daemon, with its health and metrics endpoint when configured.
pub(super) async fn run(config: &Config) -> Result<i32> {
    let archiver = Archiver::from_config(config)?;
    archiver.prepare().await?;
    telemetry::metrics_handle();
    let state = Arc::new(RunState::default());
    if let Some(addr) = config.telemetry.listen {
        let listener = telemetry::bind(addr)
            .await
            .map_err(|e| Error::Usage(e.to_string()))?;
        tracing::info!(%addr, "serving /healthz, /readyz, /metrics and /status");
        let page = status_page(config, archiver.ledger().clone())?;
        tokio::spawn(telemetry::serve(listener, state.clone(), Some(page)));
    }
    let stop = shutdown_on_signal();
    // The SMTP intake listens for as long as the daemon runs, while days are processed.
    let intake = match crate::intake::Intake::from_config(config, archiver.stage().clone())? {
        Some(intake) => {
            let addr = config
                .intake
                .as_ref()
                .map(|i| i.listen)
                .expect("configured");
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                Error::from(config.error("intake.listen", format!("cannot listen on {addr}: {e}")))
            })?;
            Some(tokio::spawn(crate::intake::serve(
                Arc::new(intake),
                listener,
                stop.clone(),
            )))
        }
        None => None,
    };
    let archiver = Arc::new(archiver.with_shutdown(stop.clone()));
    let outcome = scheduler::run(
        archiver,
        &config.schedule,
        Arc::new(SystemClock),
        stop,
        state,
    )
    .await;
    if let Some(intake) = intake {
        match outcome.is_ok() {
            // Stopped by a signal: the intake is closing too, its sessions told 421.
            true => drop(intake.await),
            false => intake.abort(),
        }
    }
    outcome?;
    Ok(EXIT_DONE)
}

/// `/status`: the page of the last 30 days of every enabled connector.
fn status_page(config: &Config, ledger: crate::ledger::Ledger) -> Result<telemetry::StatusPage> {
    let token = match &config.telemetry.status_token {
        Some(reference) => Some(
            config
                .secrets()
                .resolve("telemetry.status_token", Some(reference))?,
        ),
        None => None,
    };
    let names: Arc<Vec<String>> = Arc::new(
        config
            .enabled_connectors()
            .map(|(n, _)| n.to_string())
            .collect(),
    );
    let render = move || {
        let (ledger, names) = (ledger.clone(), names.clone());
        Box::pin(async move {
            let to = Utc::now().date_naive().pred_opt().unwrap_or_default();
            let from = to.checked_sub_days(chrono::Days::new(29)).unwrap_or(to);
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            super::report::page(&ledger, &names, from, to).await
        }) as std::pin::Pin<Box<dyn Future<Output = String> + Send>>
    };
    Ok(telemetry::StatusPage {
        token,
        render: Box::new(render),
    })
}

/// 0 when every connector-day finished with nothing left for a person; 3 when every day is
/// finished but copies are held or failed for good (no later run retries them on its own);
/// 1 when any day is left for a later run (also when the work was cut short by a shutdown).
fn exit_code(results: Option<&[DayResult]>) -> i32 {
    let failed_for_good = |r: &DayResult| {
        r.log.as_ref().is_ok_and(|l| {
            !l.held_copies.is_empty() || l.failures.iter().any(|f| !f.reason.is_retried())
        })
    };
    match results {
        Some(results) if results.iter().all(DayResult::is_complete) => {
            match results.iter().any(failed_for_good) {
                true => EXIT_ATTENTION,
                false => EXIT_DONE,
            }
        }
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
