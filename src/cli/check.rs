//! `check`: the configuration and the mapping files, then the environment they point at
//! (drop directories, the stage, the mailbox tree; with `--connect`, every partner and
//! mailbox backend signed in to); with `--verify-stage`, the staged messages of a day
//! against the ledger's SHA-256.

use super::{check_connector, EXIT_CONFIG, EXIT_DONE, EXIT_RETRY};
use crate::config::Config;
use crate::ledger::Ledger;
use crate::pipeline::Archiver;
use crate::Result;
use chrono::NaiveDate;

/// Builds every enabled connector (mapping CSVs and secrets included), then looks at what
/// the configuration points at and says, for each, OK or what failed and what to do. Exit 2
/// when anything is missing or refuses writes.
pub(super) async fn environment(config: &Config, only: Option<&str>, connect: bool) -> Result<i32> {
    check_connector(config, only)?;
    let archiver = Archiver::from_config(config)?;
    println!("configuration {} is valid", config.file.display());
    let mut problems = 0;
    let mut say = |what: &str, outcome: std::result::Result<String, String>| match outcome {
        Ok(found) => println!("  OK    {what}: {found}"),
        Err(why) => {
            problems += 1;
            println!("  FAIL  {what}: {why}");
        }
    };
    let now = chrono::Utc::now();
    let mut sample = None;
    for connector in archiver
        .connectors()
        .iter()
        .filter(|c| only.is_none_or(|o| o == c.name))
    {
        println!(
            "connector {}: partner {}, folder \"{}\"",
            connector.name,
            connector.partner.as_str(),
            connector.folder
        );
        if let Some(table) = connector.mapper.table() {
            let mapped = table.mapped_at(now);
            sample = sample.or_else(|| mapped.first().map(|(_, m)| m.to_string()));
            say(
                "mapping",
                Ok(format!(
                    "{} read, {} mapped today",
                    table.file().display(),
                    crate::report::counted(mapped.len() as u64, "identifier", "identifiers")
                )),
            );
        }
        let source = connector.source.check(connect).await;
        say("source", source.map_err(|e| e.to_string()));
    }
    println!("stage and mailboxes:");
    let stage = archiver.stage().probe().await;
    say(
        "stage",
        stage.map_err(|e| format!("{e}; check the [stage] section and its permissions")),
    );
    let mailbox = archiver.mailbox().probe(sample.as_deref(), connect).await;
    say("mailbox", mailbox.map_err(|e| e.to_string()));
    if let Some(listen) = config.intake.as_ref().map(|i| i.listen) {
        println!("SMTP intake:");
        let intake = crate::intake::Intake::from_config(config, archiver.stage().clone());
        say(
            "intake",
            intake
                .map(|i| i.map(|i| i.describe()).unwrap_or_default())
                .map_err(|e| e.to_string()),
        );
        say("listen", intake_port(listen).await);
    }
    if problems > 0 {
        let problems = crate::report::counted(problems as u64, "problem", "problems");
        println!("{problems}: fix what each FAIL says, then run check again");
        return Ok(EXIT_CONFIG);
    }
    println!("everything checked is ready");
    Ok(EXIT_DONE)
}

/// Whether the intake's address can be listened on, or is the daemon's already.
async fn intake_port(listen: std::net::SocketAddr) -> std::result::Result<String, String> {
    use tokio::io::AsyncReadExt;
    match tokio::net::TcpListener::bind(listen).await {
        Ok(_) => Ok(format!("{listen} is free to listen on")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let greeting = async {
                let mut stream = tokio::net::TcpStream::connect(listen).await?;
                let mut buf = [0u8; 256];
                let n = stream.read(&mut buf).await?;
                Ok::<String, std::io::Error>(String::from_utf8_lossy(&buf[..n]).into_owned())
            };
            match tokio::time::timeout(std::time::Duration::from_secs(5), greeting).await {
                Ok(Ok(g)) if g.starts_with("220 ") && g.contains("ESMTP comms-archiver") => {
                    Ok(format!("{listen}: the daemon is listening there"))
                }
                _ => Err(format!(
                    "{listen} is in use by another program; stop it or change intake.listen"
                )),
            }
        }
        Err(e) => Err(format!(
            "cannot listen on {listen}: {e} (check intake.listen)"
        )),
    }
}

/// Re-reads the staged messages of `day` and compares them with what the ledger recorded.
pub(super) async fn verify_stage(
    config: &Config,
    day: NaiveDate,
    only: Option<&str>,
) -> Result<i32> {
    check_connector(config, only)?;
    let ledger = Ledger::new(crate::stage::build(&config.stage, &config.secrets())?);
    let mut clean = true;
    for (name, _) in config
        .enabled_connectors()
        .filter(|(n, _)| only.is_none_or(|c| c == *n))
    {
        let found = ledger.verify_day(name, day).await?;
        println!(
            "{name} {day}: staged and matching the ledger {}, changed or missing {}, not imported yet {}",
            found.matching,
            found.mismatched.len(),
            found.not_imported.len()
        );
        // Items are staged under their own dates: say where the counts differ from the
        // report of the day's delivery.
        for (other, n) in &found.delivered_with {
            println!(
                "  {} dated {day} came with the delivery of {other} (`report --date {other}` counts {})",
                crate::report::counted(*n as u64, "item", "items"),
                if *n == 1 { "it" } else { "them" }
            );
        }
        if let Ok(Some(log)) = ledger.reconcile(name, day).await {
            let elsewhere: Vec<String> = log
                .item_dates
                .iter()
                .filter(|d| **d != day)
                .map(|d| d.to_string())
                .collect();
            if !elsewhere.is_empty() {
                println!(
                    "  the delivery of {day} also carried items dated {}: they are staged, and \
                     verified, under those dates (`check --verify-stage --date {}`)",
                    elsewhere.join(", "),
                    elsewhere[0]
                );
            }
        }
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
