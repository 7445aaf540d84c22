//! `check`: the configuration and the mapping files; with `--verify-stage`, the staged
//! messages of a day against the ledger's SHA-256.

use super::{check_connector, EXIT_DONE, EXIT_RETRY};
use crate::config::Config;
use crate::ledger::Ledger;
use crate::pipeline::Archiver;
use crate::Result;
use chrono::NaiveDate;

/// Builds every enabled connector (mapping CSVs and secrets included) and says what each is.
pub(super) fn configuration(config: &Config) -> Result<i32> {
    let archiver = Archiver::from_config(config)?;
    for (name, c) in config.enabled_connectors() {
        let described = archiver
            .connectors()
            .iter()
            .find(|x| x.name == name)
            .map(|x| x.source.describe())
            .unwrap_or_default();
        println!(
            "connector {name}: partner {}, folder \"{}\", {described}",
            c.partner.as_str(),
            c.folder(),
        );
    }
    println!("configuration {} is valid", config.file.display());
    Ok(EXIT_DONE)
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
