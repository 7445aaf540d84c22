//! The state of one connector-day while it runs: items become work (mapping, render, size
//! gate: copies to deliver, copies to hold), and what the work did becomes the status log.
//! Only this module changes the log, so the counts add up however much work runs at once.

use super::copy::{CopyJob, Done, HoldJob, HoldResult, Work};
use super::{Archiver, Connector, Oversize};
use crate::item::{Item, ItemKey};
use crate::mapping::{Resolution, Via};
use crate::render::{render, RenderContext};
use crate::report::StatusLog;
use crate::report::{DayError, Exclusion, Failure, Held, Reason, Redriven};
use crate::sources::Pulled;
use crate::telemetry::{ItemOutcome, Outcome};
use chrono::NaiveDate;
use std::collections::HashSet;
use std::sync::Arc;

/// A rendered message and the files left out of it to fit the size limit (an index into
/// the item's files, and its listing).
pub(super) type Fitted = (Vec<u8>, Vec<(crate::report::LeftOut, usize)>);

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
    /// A re-drive of held items: the log lists where each one's copies went.
    redrive: bool,
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
            redrive: false,
        }
    }

    pub fn is_redrive(&self) -> bool {
        self.redrive
    }

    /// A run re-driving the day's held items rather than reading its delivery.
    pub fn redriving(mut self) -> Self {
        self.redrive = true;
        self
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

    /// Takes one record from the source; returns the work it makes.
    pub fn pulled(&mut self, pulled: Pulled) -> Vec<Work> {
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

    /// Maps, renders and gates one item; returns a copy to deliver per mapped mailbox (the
    /// catch-all's among them when configured and someone maps to no one), and the item to
    /// hold when a copy cannot be delivered yet. An item the source found `too_large` (its
    /// files not read) fails every copy with that.
    fn item(&mut self, mut item: Item, too_large: Option<String>) -> Vec<Work> {
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
        // Archived participants with no mailbox: a copy is held for each.
        let mut unmapped: Vec<String> = Vec::new();
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
                    if !unmapped.contains(&user) {
                        unmapped.push(user);
                    }
                }
            }
        }
        // Nobody of the organisation at all: the copy is held for the archived employee.
        if targets.is_empty() && unmapped.is_empty() {
            unmapped.push(archived_user.clone());
        }
        for user in &unmapped {
            if self.reported_unmapped.insert(user.clone()) {
                tracing::warn!(connector = name, day = %self.day, user = %user,
                    "archived user maps to no mailbox: add the number to the mapping CSV or \
                     give the user an email property in the organisation's domains; the \
                     copies are held until then");
                self.log.unmapped_users.push(user.clone());
            }
        }
        let mapped = targets.len();
        let catch_all = match unmapped.is_empty() {
            true => None,
            false => self.connector.mapper.catch_all().map(str::to_string),
        };
        if let Some(catch_all) = &catch_all {
            if !targets.contains(catch_all) {
                targets.push(catch_all.clone());
                ways.push(Via::CatchAll);
            }
        }
        let id = u128::from_str_radix(key.as_str(), 16).expect("keys are 32 hex digits");
        if !self.seen.insert(id) {
            let mut copies: Vec<Option<&str>> = targets.iter().map(|t| Some(t.as_str())).collect();
            if catch_all.is_none() {
                copies.extend(unmapped.iter().map(|_| None));
            }
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
        if self.redrive {
            self.log.redriven.push(Redriven {
                item_id: item.partner_id.clone(),
                item_key: key.to_string(),
                delivered: Vec::new(),
                already: Vec::new(),
            });
        }
        // Every copy the item has for someone, catch-all aside: for failing or holding
        // them all at once.
        let every_copy: Vec<(Option<String>, String)> = targets[..mapped]
            .iter()
            .map(|t| (Some(t.clone()), archived_user.clone()))
            .chain(unmapped.iter().map(|u| (None, u.clone())))
            .collect();
        if let Some(detail) = too_large {
            let detail = format!(
                "{detail}; the item was not read, so it is not kept: the partner still has it"
            );
            self.fail_copies(&item, &key, &every_copy, Reason::SizeExceeded, &detail);
            return Vec::new();
        }
        // The names the mapping CSV gives the employees it maps are shown in the message;
        // the item kept (held) stays as the partner delivered it.
        let named: Vec<Option<String>> = item
            .participants
            .iter()
            .map(|p| self.connector.mapper.display_name(p, item.time))
            .collect();
        let rendered = if named.iter().any(Option::is_some) {
            let shown = item
                .participants
                .iter()
                .zip(&named)
                .map(|(p, name)| crate::item::Participant {
                    display_name: name.clone().or_else(|| p.display_name.clone()),
                    ..p.clone()
                })
                .collect();
            let delivered = std::mem::replace(&mut item.participants, shown);
            let rendered = self.render_within_limit(&item, &key, &per_participant);
            item.participants = delivered;
            rendered
        } else {
            self.render_within_limit(&item, &key, &per_participant)
        };
        let item = Arc::new(item);
        let unmapped_held = |filed_in: Option<String>| -> Vec<Held> {
            unmapped
                .iter()
                .map(|user| Held {
                    item_id: item.partner_id.clone(),
                    item_key: key.to_string(),
                    source_user: user.clone(),
                    mailbox: None,
                    reason: Reason::UserMapping,
                    detail: "maps to no mailbox (mapping CSV, then email property)".into(),
                    filed_in: filed_in.clone(),
                    kept: String::new(),
                })
                .collect()
        };
        let (message, left_out) = match rendered {
            Ok(fitted) => fitted,
            Err((Reason::SizeExceeded, detail)) => {
                let mut copies: Vec<Held> = targets[..mapped]
                    .iter()
                    .map(|mailbox| Held {
                        item_id: item.partner_id.clone(),
                        item_key: key.to_string(),
                        source_user: archived_user.clone(),
                        mailbox: Some(mailbox.clone()),
                        reason: Reason::SizeExceeded,
                        detail: detail.clone(),
                        filed_in: None,
                        kept: String::new(),
                    })
                    .collect();
                copies.extend(unmapped_held(None));
                return vec![Work::Hold(HoldJob { item, copies })];
            }
            Err((reason, detail)) => {
                self.fail_copies(&item, &key, &every_copy, reason, &detail);
                return Vec::new();
            }
        };
        let mut work = Vec::with_capacity(targets.len() + 1);
        if !unmapped.is_empty() {
            let copies = unmapped_held(catch_all);
            work.push(Work::Hold(HoldJob {
                item: item.clone(),
                copies,
            }));
        }
        let message: Arc<[u8]> = Arc::from(message);
        let left_out: Arc<[_]> = Arc::from(left_out);
        let mapper = &self.connector.mapper;
        work.extend(targets.into_iter().zip(ways).map(|(mailbox, via)| {
            Work::Copy(CopyJob {
                item_id: item.partner_id.clone(),
                key: key.clone(),
                time: item.time,
                mailbox,
                via,
                mapped_by: mapper.explain(via),
                user: archived_user.clone(),
                message: message.clone(),
                item: item.clone(),
                left_out: left_out.clone(),
            })
        }));
        work
    }

    /// The item's message, or why it cannot be imported: too large (the files alone already
    /// too large are refused without rendering them, which would hold the item a few more
    /// times over in memory) or not renderable. With `oversize = "drop-attachments"`, a
    /// message too large is rendered again without its largest files.
    fn render_within_limit(
        &self,
        item: &Item,
        key: &ItemKey,
        per_participant: &[Option<String>],
    ) -> Result<Fitted, (Reason, String)> {
        let limit = self.archiver.max_item_bytes;
        let ctx = RenderContext {
            connector: self.connector.name.as_str(),
            partner: self.connector.partner.as_str(),
            invalid_domain: self.connector.partner.invalid_domain(),
        };
        let render = |item: &Item| {
            render(item, key, &ctx, per_participant)
                .map_err(|e| (Reason::RenderError, e.to_string()))
        };
        let skip = self.archiver.oversize == Oversize::Skip;
        let payload = item.content.payload_bytes();
        let cure = "held until archiver.max_item_bytes is raised (or archiver.oversize is \
                    \"drop-attachments\") and the day is re-driven";
        if payload > limit {
            if skip {
                let detail = format!(
                    "its files alone are {payload} bytes, so the message exceeds the limit of \
                     {limit} bytes; {cure}"
                );
                return Err((Reason::SizeExceeded, detail));
            }
        } else {
            let rendered = render(item)?;
            let size = rendered.len() as u64;
            if size <= limit {
                return Ok((rendered, Vec::new()));
            }
            if skip {
                let detail = format!(
                    "rendered size {size} bytes exceeds the limit of {limit} bytes; {cure}"
                );
                return Err((Reason::SizeExceeded, detail));
            }
        }
        super::oversize::leave_out_files(item, key, &self.connector.name, limit, render)
    }

    /// Fails every copy for the same reason: `copies` are (mailbox, whom it is for).
    fn fail_copies(
        &mut self,
        item: &Item,
        key: &ItemKey,
        copies: &[(Option<String>, String)],
        reason: Reason,
        detail: &str,
    ) {
        for (mailbox, user) in copies {
            let (id, key) = (item.partner_id.as_str(), key.as_str());
            self.fail(
                id,
                key,
                user.clone(),
                mailbox.as_deref(),
                reason,
                detail.to_string(),
            );
        }
    }

    /// Counts what a piece of collection did: a copy staged and listed is counted when it
    /// is delivered; one that could not be staged fails as a stage error.
    pub fn apply(&mut self, done: Done) {
        match done {
            Done::Staged {
                outcome: Ok(()), ..
            } => {}
            Done::Staged {
                job,
                outcome: Err(why),
            } => {
                let detail = format!("the copy could not be staged ({why})");
                if self.stage_down.is_none() {
                    self.stage_down = Some(detail.clone());
                }
                let (id, key) = (job.item_id.as_str(), job.key.as_str());
                let mailbox = Some(job.mailbox.as_str());
                self.fail(
                    id,
                    key,
                    job.user.clone(),
                    mailbox,
                    Reason::StageError,
                    detail,
                );
            }
            Done::Hold(result) => self.held(result),
        }
    }

    /// In a re-drive, a held copy to deliver again as it was staged.
    pub fn restaged(&mut self, held: crate::ledger::HeldCopy) -> crate::ledger::StagedCopy {
        self.log.available_from_source += 1;
        let copy = held.copy;
        self.log.note_item_date(copy.time.date_naive());
        if self.redrive
            && !self
                .log
                .redriven
                .iter()
                .any(|r| r.item_key == copy.item_key)
        {
            self.log.redriven.push(Redriven {
                item_id: copy.item_id.clone(),
                item_key: copy.item_key.clone(),
                delivered: Vec::new(),
                already: Vec::new(),
            });
        }
        crate::ledger::StagedCopy {
            fresh: false,
            ..copy
        }
    }

    /// Counts the held copies of an item, or fails them when it could not be held (the day
    /// then stays open, and the next run holds them).
    fn held(&mut self, result: HoldResult) {
        match result.outcome {
            Ok(kept) => {
                for mut held in result.job.copies {
                    held.kept = kept.clone();
                    let outcome = Outcome::Held(held.reason);
                    let (key, id) = (held.item_key.clone(), held.item_id.clone());
                    self.emit(&key, &id, held.mailbox.as_deref(), outcome, &held.detail);
                    self.log.hold(held);
                }
            }
            Err(e) => {
                let detail = format!("the copy could not be held in the stage ({e})");
                if self.stage_down.is_none() {
                    self.stage_down = Some(detail.clone());
                }
                for held in result.job.copies {
                    let (id, key) = (&held.item_id, &held.item_key);
                    let (mailbox, user) = (held.mailbox.as_deref(), held.source_user.clone());
                    self.fail(id, key, user, mailbox, Reason::StageError, detail.clone());
                }
            }
        }
    }
}
