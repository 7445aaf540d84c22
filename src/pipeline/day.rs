//! The state of one connector-day while it runs: items become copy jobs (mapping, render,
//! size gate), and copy results become the status log. Only this module changes the log, so
//! the counts add up however many copies run at once.

use super::copy::{CopyJob, CopyResult};
use super::{Archiver, Connector};
use crate::item::{Item, ItemKey};
use crate::mapping::{Resolution, Via};
use crate::render::{render, RenderContext};
use crate::report::{DayError, Exclusion, Failure, Reason, StatusLog};
use crate::sources::Pulled;
use crate::telemetry::{ItemOutcome, Outcome};
use chrono::NaiveDate;
use std::collections::HashSet;
use std::sync::Arc;

pub(super) struct DayRun<'a> {
    pub archiver: &'a Archiver,
    pub connector: &'a Connector,
    pub day: NaiveDate,
    pub log: StatusLog,
    reported_unmapped: HashSet<String>,
    /// Keys of the items already handled in this run (16 bytes each), so that a record the
    /// partner repeats is a duplicate, never a second import or a second failure.
    seen: HashSet<u128>,
    /// Set when the stage failed: the rest of the day is left for the next run instead of
    /// failing item after item against a store that is down.
    pub stage_down: Option<String>,
}

impl<'a> DayRun<'a> {
    pub fn new(archiver: &'a Archiver, connector: &'a Connector, day: NaiveDate) -> Self {
        DayRun {
            archiver,
            connector,
            day,
            log: StatusLog::new(&connector.name, day),
            reported_unmapped: HashSet::new(),
            seen: HashSet::new(),
            stage_down: None,
        }
    }

    pub fn day_error(&mut self, reason: &str, detail: String) {
        tracing::error!(connector = %self.connector.name, day = %self.day, reason, %detail,
            "the day stays open");
        self.log.errors.push(DayError {
            reason: reason.to_string(),
            detail,
        });
    }

    fn emit(
        &self,
        key: &str,
        item_id: &str,
        mailbox: Option<&str>,
        outcome: Outcome,
        detail: &str,
    ) {
        ItemOutcome {
            connector: &self.connector.name,
            day: self.day,
            item_key: key,
            item_id,
            mailbox,
            outcome,
            detail,
        }
        .emit();
    }

    fn fail(
        &mut self,
        item_id: &str,
        key: &str,
        source_user: String,
        mailbox: Option<&str>,
        reason: Reason,
        detail: String,
    ) {
        self.emit(key, item_id, mailbox, Outcome::Failed(reason), &detail);
        self.log.fail(Failure {
            item_id: item_id.to_string(),
            source_user,
            mailbox: mailbox.map(str::to_string),
            reason,
            detail,
        });
    }

    /// Takes one record from the source; returns the copies to deliver.
    pub fn pulled(&mut self, pulled: Pulled) -> Vec<CopyJob> {
        self.log.available_from_source += 1;
        match pulled {
            Pulled::Item(item) => {
                self.log.note_item_date(item.time.date_naive());
                self.item(*item, None)
            }
            Pulled::TooLarge { item, detail } => {
                self.log.note_item_date(item.time.date_naive());
                tracing::warn!(connector = %self.connector.name, day = %self.day,
                    item_id = %item.partner_id, %detail, "item over the size limit");
                self.item(*item, Some(detail))
            }
            Pulled::Excluded {
                partner_id,
                reason,
                detail,
            } => {
                tracing::info!(connector = %self.connector.name, day = %self.day,
                    item_id = %partner_id, reason = %reason, %detail, "item excluded");
                self.log.exclude(Exclusion {
                    item_id: partner_id,
                    reason,
                    detail,
                });
                Vec::new()
            }
            Pulled::Invalid {
                location,
                partner_id,
                reason,
            } => {
                let item_id = partner_id.unwrap_or_else(|| location.clone());
                let detail = format!("{location}: {reason}");
                self.fail(
                    &item_id,
                    "",
                    "(unknown)".into(),
                    None,
                    Reason::InvalidPayload,
                    detail,
                );
                Vec::new()
            }
        }
    }

    /// Maps, renders and gates one item; returns a copy job per mapped mailbox. An item the
    /// source found `too_large` (its files or message not read) fails every copy with that.
    fn item(&mut self, item: Item, too_large: Option<String>) -> Vec<CopyJob> {
        let name = self.connector.name.as_str();
        let key = ItemKey::new(name, &item.partner_id);
        let archived_user = item
            .participants
            .iter()
            .find(|p| p.archived)
            .or(item.participants.first())
            .map(|p| p.source_user())
            .unwrap_or_else(|| "(unknown)".into());

        let mut per_participant = Vec::with_capacity(item.participants.len());
        let mut targets: Vec<String> = Vec::new();
        // How each target was mapped: the first participant that maps to it says.
        let mut ways: Vec<Via> = Vec::new();
        for participant in &item.participants {
            match self.connector.mapper.resolve(participant, item.time) {
                Resolution::Mailbox { address, via } => {
                    if !targets.contains(&address) {
                        targets.push(address.clone());
                        ways.push(via);
                    }
                    per_participant.push(Some(address));
                }
                Resolution::External => per_participant.push(None),
                Resolution::Unmapped => {
                    per_participant.push(None);
                    let user = participant.source_user();
                    if self.reported_unmapped.insert(user.clone()) {
                        tracing::warn!(connector = name, day = %self.day, user = %user,
                            "archived user maps to no mailbox: add the number to the mapping \
                             CSV or give the user an email property in the organisation's domains");
                        self.log.unmapped_users.push(user);
                    }
                }
            }
        }
        let id = u128::from_str_radix(key.as_str(), 16).expect("keys are 32 hex digits");
        if !self.seen.insert(id) {
            let copies: Vec<Option<&str>> = match targets.is_empty() {
                true => vec![None],
                false => targets.iter().map(|t| Some(t.as_str())).collect(),
            };
            for mailbox in copies {
                self.log.available_for_import += 1;
                self.log.skipped_duplicates += 1;
                let detail = "repeated by the partner in this delivery";
                self.emit(
                    key.as_str(),
                    &item.partner_id,
                    mailbox,
                    Outcome::SkippedDuplicate,
                    detail,
                );
            }
            return Vec::new();
        }
        if targets.is_empty() {
            let detail = "no participant maps to a mailbox (mapping CSV, then email property)";
            self.fail(
                &item.partner_id,
                key.as_str(),
                archived_user,
                None,
                Reason::UserMapping,
                detail.into(),
            );
            return Vec::new();
        }

        let rendered = match too_large
            .map(|detail| Err((Reason::SizeExceeded, detail)))
            .unwrap_or_else(|| self.render_within_limit(&item, &key, &per_participant))
        {
            Ok(bytes) => bytes,
            Err((reason, detail)) => {
                self.fail_copies(&item, &key, &targets, &archived_user, reason, &detail);
                return Vec::new();
            }
        };
        let message: Arc<[u8]> = Arc::from(rendered);
        let mapper = &self.connector.mapper;
        targets
            .into_iter()
            .zip(ways)
            .map(|(mailbox, via)| CopyJob {
                item_id: item.partner_id.clone(),
                key: key.clone(),
                time: item.time,
                mailbox,
                via,
                mapped_by: mapper.explain(via),
                user: archived_user.clone(),
                message: message.clone(),
            })
            .collect()
    }

    /// The item's message, or why it cannot be imported: too large (the files alone already
    /// too large are refused without rendering them, which would hold the item a few more
    /// times over in memory) or not renderable.
    fn render_within_limit(
        &self,
        item: &Item,
        key: &ItemKey,
        per_participant: &[Option<String>],
    ) -> Result<Vec<u8>, (Reason, String)> {
        let limit = self.archiver.max_item_bytes;
        let payload = item.content.payload_bytes();
        if payload > limit {
            let detail = format!(
                "its files alone are {payload} bytes, so the message exceeds the limit of {limit} \
                 bytes"
            );
            return Err((Reason::SizeExceeded, detail));
        }
        let ctx = RenderContext {
            connector: self.connector.name.as_str(),
            partner: self.connector.partner.as_str(),
            invalid_domain: self.connector.partner.invalid_domain(),
        };
        let rendered = render(item, key, &ctx, per_participant)
            .map_err(|e| (Reason::RenderError, e.to_string()))?;
        let size = rendered.len() as u64;
        if size > limit {
            let detail = format!("rendered size {size} bytes exceeds the limit of {limit} bytes");
            return Err((Reason::SizeExceeded, detail));
        }
        Ok(rendered)
    }

    /// Fails the copy of every target mailbox for the same reason.
    fn fail_copies(
        &mut self,
        item: &Item,
        key: &ItemKey,
        targets: &[String],
        user: &str,
        reason: Reason,
        detail: &str,
    ) {
        for mailbox in targets {
            let (id, key) = (item.partner_id.as_str(), key.as_str());
            self.fail(
                id,
                key,
                user.to_string(),
                Some(mailbox),
                reason,
                detail.to_string(),
            );
        }
    }

    /// Counts what happened to a copy.
    pub fn apply(&mut self, result: CopyResult) {
        let job = &result.job;
        match result.outcome {
            Ok(outcome) => {
                self.log.available_for_import += 1;
                let detail = match outcome {
                    Outcome::Imported => {
                        self.log.imported += 1;
                        *self
                            .log
                            .mapped_by
                            .entry(job.via.label().to_string())
                            .or_default() += 1;
                        ""
                    }
                    _ => {
                        self.log.skipped_duplicates += 1;
                        "already in the mailbox"
                    }
                };
                self.emit(
                    job.key.as_str(),
                    &job.item_id,
                    Some(&job.mailbox),
                    outcome,
                    detail,
                );
            }
            Err((reason, detail)) => {
                if reason == Reason::StageError && self.stage_down.is_none() {
                    self.stage_down = Some(detail.clone());
                }
                // A mapped address with no mailbox in the tenant: reported once per day.
                if reason == Reason::UserMapping
                    && self.reported_unmapped.insert(job.mailbox.clone())
                {
                    tracing::warn!(connector = %self.connector.name, day = %self.day, mailbox = %job.mailbox,
                        "the mapped address has no mailbox; fix the mapping or create the mailbox");
                    self.log.unmapped_users.push(job.mailbox.clone());
                }
                let (id, key, mailbox) = (
                    job.item_id.clone(),
                    job.key.to_string(),
                    job.mailbox.clone(),
                );
                self.fail(&id, &key, job.user.clone(), Some(&mailbox), reason, detail);
            }
        }
    }
}
