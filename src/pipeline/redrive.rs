//! Re-driving held copies: a run of its own over the items a day's runs held, mapped,
//! rendered and delivered again with today's configuration (a copy held as staged, because
//! its mailbox refused it or did not exist, is delivered again as it was staged), so that a mapping fixed or a
//! mailbox created since brings them home. Copies a run already imported are skipped by the
//! journal, so a re-drive delivers each held copy exactly once however often it runs; the
//! day's reconciliation moves what it delivered from held to imported.

use super::day::DayRun;
use super::{Archiver, Connector};
use crate::ledger::{Ledger, Opened, Place};
use crate::report::{RunKind, StatusLog};
use crate::sources::{ItemStream, Pulled, SourceError};
use crate::Result;
use async_trait::async_trait;
use chrono::NaiveDate;
use std::collections::BTreeSet;

/// What a re-drive of one connector-day did.
#[derive(Debug)]
pub struct Redrive {
    pub connector: String,
    pub day: NaiveDate,
    /// The re-drive's run log; None when there was nothing to re-drive (no copies held, the
    /// day still open or another daemon on it).
    pub log: Result<Option<StatusLog>>,
}

impl Archiver {
    /// Re-drives the held copies of every day given, for every connector (or the one named).
    pub async fn redrive_days(&self, days: &[NaiveDate], only: Option<&str>) -> Vec<Redrive> {
        let mut results = Vec::new();
        for connector in self
            .connectors
            .iter()
            .filter(|c| only.is_none_or(|o| o == c.name))
        {
            for &day in days {
                if self.is_shutting_down() {
                    break;
                }
                let log = self.redrive_day(connector, day).await;
                if let Err(e) = &log {
                    tracing::error!(connector = %connector.name, day = %day, error = %e,
                        "the held copies could not be re-driven; the next re-drive tries again");
                }
                results.push(Redrive {
                    connector: connector.name.clone(),
                    day,
                    log,
                });
            }
        }
        self.mailbox.close_idle().await;
        results
    }

    /// Delivers what can now be delivered of the copies still held for `day`. Only a
    /// complete day is re-driven: an open one is read again whole by its next run.
    pub async fn redrive_day(
        &self,
        connector: &Connector,
        day: NaiveDate,
    ) -> Result<Option<StatusLog>> {
        let name = connector.name.as_str();
        if !self.ledger.is_complete(name, day).await? {
            return Ok(None);
        }
        let still_held: BTreeSet<String> = match self.ledger.reconcile(name, day).await? {
            Some(log) => log.held_copies.into_iter().map(|h| h.kept).collect(),
            None => return Ok(None),
        };
        if still_held.is_empty() {
            return Ok(None);
        }
        let session = match self.ledger.open_day(name, day).await? {
            Opened::Session(session) => session,
            Opened::Busy(busy) => {
                tracing::info!(connector = name, day = %day, %busy,
                    "held copies left for the daemon that holds the day");
                return Ok(None);
            }
        };
        tracing::info!(connector = name, day = %day, held = still_held.len(),
            "re-driving held copies");
        let (copies, items): (Vec<String>, Vec<String>) = still_held
            .into_iter()
            .partition(|k| Ledger::is_held_copy(k));
        let mut restaged = Vec::with_capacity(copies.len());
        for key in &copies {
            match self.ledger.read_held_copy(key).await {
                Ok(held) => restaged.push(held),
                Err(e) => {
                    session.abandon().await;
                    return Err(e);
                }
            }
        }
        let held: Box<dyn ItemStream> = Box::new(HeldItems {
            ledger: self.ledger.clone(),
            keys: items.into_iter(),
        });
        let run = DayRun::new(self, connector, day).redriving();
        let collected = match self.collect(run, &session, Ok(held), restaged).await {
            Ok(collected) => collected,
            Err(e) => {
                session.abandon().await;
                return Err(e);
            }
        };
        let delivered = match collected {
            Ok(collected) => {
                self.deliver_collection(connector, &session, collected)
                    .await
            }
            Err(log) => Ok(log),
        };
        let mut log = match delivered {
            Ok(log) => log,
            Err(e) => {
                session.abandon().await;
                return Err(e);
            }
        };
        let place = Place {
            destination: self.mailbox.destination(),
            folder: connector.folder.clone(),
        };
        log.destination = Some(format!("{}, folder '{}'", place.destination, place.folder));
        session
            .finish_as(&mut log, &place, RunKind::Redrive)
            .await?;
        Ok(Some(log))
    }
}

/// The held items of a day, read one at a time.
struct HeldItems {
    ledger: Ledger,
    keys: std::vec::IntoIter<String>,
}

#[async_trait]
impl ItemStream for HeldItems {
    async fn next(&mut self) -> std::result::Result<Option<Pulled>, SourceError> {
        let Some(key) = self.keys.next() else {
            return Ok(None);
        };
        match self.ledger.read_held(&key).await {
            Ok(held) => Ok(Some(Pulled::Item(Box::new(held.item)))),
            Err(e) => Err(SourceError::Unavailable(format!(
                "the held item {key} cannot be read: {e}"
            ))),
        }
    }
}
