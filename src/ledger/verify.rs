//! `check --verify-stage`: the staged messages of a date against the SHA-256 their import
//! records hold.

use super::{ImportRecord, Journal, Ledger};
use crate::item::ItemKey;
use crate::Result;
use chrono::NaiveDate;
use std::collections::HashMap;

/// What `verify_day` found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Staged messages whose bytes still match their import record.
    pub matching: usize,
    /// Staged messages that changed since they were imported, or vanished.
    pub mismatched: Vec<String>,
    /// Staged messages with no import record yet (a day still open).
    pub not_imported: Vec<String>,
    /// Of the matching messages, those that came with another day's delivery (items the
    /// partner delivered late, or early), by that day.
    pub delivered_with: std::collections::BTreeMap<NaiveDate, usize>,
}

impl Ledger {
    /// Re-reads every message staged under a date and compares it with the SHA-256 recorded
    /// when it was imported.
    pub async fn verify_day(&self, connector: &str, day: NaiveDate) -> Result<Verification> {
        let prefix = format!("staged/{connector}/{day}/");
        let mut keys = self.stage.list(&prefix).await?;
        keys.sort();
        let mut records: HashMap<(String, String), ImportRecord> = HashMap::new();
        for batch in self.stage.list(&Journal::prefix(connector, day)).await? {
            for record in self.read_batch(&batch).await? {
                records.insert((record.mailbox.clone(), record.item_key.clone()), record);
            }
        }
        let mut report = Verification::default();
        for staged in keys {
            let Some((mailbox, file)) = staged[prefix.len()..].split_once('/') else {
                continue;
            };
            // A file left out of a copy is named by its SHA-256.
            if let Some(sha256) = file
                .rsplit_once('/')
                .map(|(_, s)| s)
                .filter(|_| mailbox == "files")
            {
                match self.stage.get(&staged).await? {
                    Some(bytes) if crate::item::sha256_hex(&bytes) == sha256 => {
                        report.matching += 1
                    }
                    Some(_) => report.mismatched.push(format!(
                        "{staged}: its bytes no longer have the SHA-256 it is named by"
                    )),
                    None => report
                        .mismatched
                        .push(format!("{staged}: listed, but gone when read")),
                }
                continue;
            }
            let Some(item_key) = file.strip_suffix(".eml") else {
                continue;
            };
            let record = match records.remove(&(mailbox.to_string(), item_key.to_string())) {
                Some(record) => record,
                None => match self
                    .legacy_record(connector, mailbox, &ItemKey::from_hex(item_key))
                    .await?
                {
                    Some(record) => record,
                    None => {
                        report.not_imported.push(staged);
                        continue;
                    }
                },
            };
            match self.stage.get(&staged).await? {
                Some(bytes) if crate::item::sha256_hex(&bytes) == record.sha256 => {
                    report.matching += 1;
                    if record.day != day {
                        *report.delivered_with.entry(record.day).or_default() += 1;
                    }
                }
                Some(bytes) => report.mismatched.push(format!(
                    "{staged}: SHA-256 {} differs from {} recorded at import ({})",
                    crate::item::sha256_hex(&bytes),
                    record.sha256,
                    record.imported_at.format("%Y-%m-%d %H:%M:%S UTC")
                )),
                None => report
                    .mismatched
                    .push(format!("{staged}: listed, but gone when read")),
            }
        }
        Ok(report)
    }
}
