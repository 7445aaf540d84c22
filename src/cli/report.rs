//! `report`: a day's reconciliation, or its runs' logs, as a table, JSON or CSV.

use super::{check_connector, ReportFormat, EXIT_DONE};
use crate::config::Config;
use crate::ledger::Ledger;
use crate::report::StatusLog;
use crate::{Error, Result};
use chrono::NaiveDate;

/// Prints the reconciliation of `day` of every enabled connector (or the one named), or with
/// `runs` each run's log.
pub(super) async fn report(
    config: &Config,
    day: NaiveDate,
    only: Option<&str>,
    runs: bool,
    format: ReportFormat,
) -> Result<i32> {
    check_connector(config, only)?;
    let ledger = Ledger::new(crate::stage::build(&config.stage, &config.secrets())?);
    let mut logs: Vec<StatusLog> = Vec::new();
    for (name, _) in config
        .enabled_connectors()
        .filter(|(n, _)| only.is_none_or(|c| c == *n))
    {
        let found = match runs {
            true => ledger.run_logs(name, day).await?,
            false => ledger.reconcile(name, day).await?.into_iter().collect(),
        };
        if found.is_empty() {
            eprintln!("no status log for connector {name} on {day} yet");
        }
        logs.extend(found);
    }
    if logs.is_empty() {
        return Err(Error::Usage(format!(
            "no status log for {day}: run `comms-archiver once --date {day}` first"
        )));
    }
    print!("{}", render_logs(&logs, format));
    Ok(EXIT_DONE)
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
        ReportFormat::Html => {
            let day = logs.first().map(|l| l.day).unwrap_or_default();
            let days = logs
                .iter()
                .map(|l| crate::report::html::ConnectorDays {
                    connector: l.connector.clone(),
                    days: vec![(l.day, Ok(Some(l.clone())))],
                })
                .collect::<Vec<_>>();
            crate::report::html::page(&days, day, day)
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

/// Writes the page of the days from `from` to `to` to stdout.
pub(super) async fn html(
    config: &Config,
    from: NaiveDate,
    to: NaiveDate,
    only: Option<&str>,
) -> Result<i32> {
    check_connector(config, only)?;
    if from > to {
        return Err(Error::Usage(format!("--from {from} is after --to {to}")));
    }
    let ledger = Ledger::new(crate::stage::build(&config.stage, &config.secrets())?);
    let names: Vec<&str> = config
        .enabled_connectors()
        .map(|(n, _)| n)
        .filter(|n| only.is_none_or(|c| c == *n))
        .collect();
    print!("{}", page(&ledger, &names, from, to).await);
    Ok(EXIT_DONE)
}

/// The HTML page of `connectors` over the days, from the ledger.
pub async fn page(ledger: &Ledger, connectors: &[&str], from: NaiveDate, to: NaiveDate) -> String {
    let mut days = Vec::new();
    for name in connectors {
        days.push(crate::report::html::ConnectorDays {
            connector: name.to_string(),
            days: ledger.reconcile_range(name, from, to).await,
        });
    }
    crate::report::html::page(&days, from, to)
}
