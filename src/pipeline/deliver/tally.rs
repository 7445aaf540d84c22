//! The counts of one shard's copies as they are delivered: what each copy's delivery did,
//! in the shard's status log.

use super::super::copy::Delivered;
use crate::ledger::StagedCopy;
use crate::report::{Failure, Held, PartialImport, Reason, Redriven, StatusLog};
use crate::telemetry::{ItemOutcome, Outcome};
use chrono::NaiveDate;
use std::collections::HashSet;

/// The counts of one shard's copies, as its status log: only this type changes it.
pub(super) struct Tally<'a> {
    connector: &'a str,
    day: NaiveDate,
    redrive: bool,
    pub(super) log: StatusLog,
    reported_unmapped: HashSet<String>,
    pub(super) stage_down: Option<String>,
}

impl<'a> Tally<'a> {
    pub(super) fn new(connector: &'a str, day: NaiveDate, redrive: bool) -> Self {
        Tally {
            connector,
            day,
            redrive,
            log: StatusLog::new(connector, day),
            reported_unmapped: HashSet::new(),
            stage_down: None,
        }
    }

    fn emit(&self, copy: &StagedCopy, outcome: Outcome, detail: &str) {
        ItemOutcome {
            connector: self.connector,
            day: self.day,
            item_key: &copy.item_key,
            item_id: &copy.item_id,
            mailbox: Some(&copy.mailbox),
            outcome,
            detail,
        }
        .emit();
    }

    /// Counts what happened to a copy.
    pub(super) fn delivered(&mut self, done: Delivered) {
        let Delivered {
            copy,
            outcome,
            held,
        } = done;
        let (reason, detail) = match outcome {
            Ok(outcome) => {
                self.log.available_for_import += 1;
                let detail = match outcome {
                    Outcome::Imported | Outcome::PartiallyImported => {
                        if outcome == Outcome::Imported {
                            self.log.imported += 1;
                        } else {
                            self.log.partially_imported += 1;
                            self.log.partial_imports.push(PartialImport {
                                item_id: copy.item_id.clone(),
                                mailbox: copy.mailbox.clone(),
                                left_out: copy.left_out.clone(),
                            });
                        }
                        let way = copy.via.label().to_string();
                        *self.log.mapped_by.entry(way).or_default() += 1;
                        ""
                    }
                    _ => {
                        self.log.skipped_duplicates += 1;
                        "already in the mailbox"
                    }
                };
                self.redriven(&copy, outcome);
                self.emit(&copy, outcome, detail);
                return;
            }
            Err(failure) => failure,
        };
        if reason == Reason::StageError && self.stage_down.is_none() {
            self.stage_down = Some(detail.clone());
        }
        // A mapped address with no mailbox in the tenant: reported once per day.
        if reason == Reason::UserMapping && self.reported_unmapped.insert(copy.mailbox.clone()) {
            tracing::warn!(connector = self.connector, day = %self.day, mailbox = %copy.mailbox,
                "the mapped address has no mailbox; fix the mapping or create the mailbox");
            self.log.unmapped_users.push(copy.mailbox.clone());
        }
        match held {
            Some(kept) => {
                self.emit(&copy, Outcome::Held(reason), &detail);
                self.log.hold(Held {
                    item_id: copy.item_id,
                    item_key: copy.item_key,
                    source_user: copy.user,
                    mailbox: Some(copy.mailbox),
                    reason,
                    detail,
                    filed_in: None,
                    kept,
                });
            }
            None => {
                self.emit(&copy, Outcome::Failed(reason), &detail);
                self.log.fail(Failure {
                    item_id: copy.item_id,
                    source_user: copy.user,
                    mailbox: Some(copy.mailbox),
                    reason,
                    detail,
                });
            }
        }
    }

    /// In a re-drive, notes where a held item's copy went (the catch-all's aside).
    fn redriven(&mut self, copy: &StagedCopy, outcome: Outcome) {
        if !self.redrive || copy.via == crate::mapping::Via::CatchAll {
            return;
        }
        let mut entry = Redriven {
            item_id: copy.item_id.clone(),
            item_key: copy.item_key.clone(),
            delivered: Vec::new(),
            already: Vec::new(),
        };
        match outcome {
            Outcome::Imported | Outcome::PartiallyImported => {
                entry.delivered.push(copy.mailbox.clone())
            }
            _ => entry.already.push(copy.mailbox.clone()),
        }
        self.log.redriven.push(entry);
    }
}
