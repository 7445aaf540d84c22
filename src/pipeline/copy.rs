//! One copy of an item for one mailbox, in the day's two phases. Collecting stages it
//! (create-only, under the item's date) and lists it in the day's index; delivering imports
//! the staged message and records it in the run's journal. Copies share nothing mutable, so
//! many run at once; what happened goes back to the day as a result.
//!
//! Crash safety: a copy whose staged message did not exist before its collection was never
//! imported by any run, so a first delivery of it imports it at once. Any other copy (staged
//! by an earlier run, or in a shard someone took before) is imported only if the journal
//! does not know it and the mailbox does not hold it, so nothing lands twice.
//!
//! A copy that cannot be delivered yet (its mailbox unknown or refusing it) is held in the
//! stage ([`crate::ledger::HeldCopy`]) for a re-drive; so is an item whose copies map to no
//! one ([`HoldJob`], [`crate::ledger::HeldItem`]). A hold that cannot be written fails the
//! copy as a stage error: the day stays open and nothing is dropped.

use super::{Archiver, Connector};
use crate::item::{sha256_hex, Item, ItemKey};
use crate::ledger::{CollectIndex, CopyPlace, ImportRecord, Journal, Ledger, StagedCopy};
use crate::mailbox::{Delivery, MailboxError};
use crate::report::{LeftOut, Reason};
use crate::stage::Created;
use crate::telemetry::Outcome;
use chrono::{DateTime, NaiveDate, Utc};
use std::sync::Arc;

/// A copy to stage and list for delivery.
pub(super) struct CopyJob {
    pub item_id: String,
    pub key: ItemKey,
    pub time: DateTime<Utc>,
    pub mailbox: String,
    /// How the mailbox was found, and the same in words for the import record.
    pub via: crate::mapping::Via,
    pub mapped_by: String,
    /// The archived employee, for failure reports.
    pub user: String,
    /// The rendered message, shared by the item's copies.
    pub message: Arc<[u8]>,
    /// The item, for the files left out of its message.
    pub item: Arc<Item>,
    /// Files left out of the message to fit the size limit, to keep in the stage: each
    /// one's listing and its index among the item's files.
    pub left_out: Arc<[(LeftOut, usize)]>,
}

/// An item to keep in the stage for the copies that cannot be delivered yet.
pub(super) struct HoldJob {
    pub item: Arc<Item>,
    /// The copies held, each with why (`kept` is filled in once the item is kept).
    pub copies: Vec<crate::report::Held>,
}

/// What holding an item did: where it is kept, or why it could not be.
pub(super) struct HoldResult {
    pub job: HoldJob,
    pub outcome: Result<String, String>,
}

/// One piece of a day's collection: a copy to stage, or an item to hold.
pub(super) enum Work {
    Copy(CopyJob),
    Hold(HoldJob),
}

/// What a piece of collection did.
pub(super) enum Done {
    /// The copy is staged and listed, or why it could not be.
    Staged {
        job: CopyJob,
        outcome: Result<(), String>,
    },
    Hold(HoldResult),
}

impl Work {
    /// The bytes it keeps in memory while in flight: a copy keeps its rendered message and
    /// the item's files (for those left out of it), each counted whole even when the item's
    /// other copies share them.
    pub fn bytes(&self) -> u64 {
        match self {
            Work::Copy(job) => job.message.len() as u64 + job.item.content.payload_bytes(),
            Work::Hold(job) => crate::ledger::holding_bytes(&job.item),
        }
    }
}

/// What every piece of a day's collection shares.
pub(super) struct CollectContext<'a> {
    pub archiver: &'a Archiver,
    pub connector: &'a Connector,
    pub day: NaiveDate,
    /// Whether an earlier attempt at the day predates the journal: it staged copies under the
    /// day rather than their item's date, so a copy staged for the first time now may have
    /// been imported then.
    pub check_every_copy: bool,
    /// The run, for the items it holds.
    pub run: &'a str,
    pub index: &'a CollectIndex,
}

/// Does one piece of collection.
pub(super) async fn perform(ctx: &CollectContext<'_>, work: Work) -> Done {
    match work {
        Work::Copy(job) => {
            let outcome = stage(ctx, &job).await;
            Done::Staged { job, outcome }
        }
        Work::Hold(job) => {
            let ledger = &ctx.archiver.ledger;
            let outcome = ledger
                .hold(&ctx.connector.name, ctx.day, ctx.run, &job.item)
                .await
                .map_err(|e| e.to_string());
            Done::Hold(HoldResult { job, outcome })
        }
    }
}

/// Stages a copy (the files left out of it first) and lists it in the day's index.
async fn stage(ctx: &CollectContext<'_>, job: &CopyJob) -> Result<(), String> {
    let name = ctx.connector.name.as_str();
    let stage = &ctx.archiver.stage;
    let files = job.item.content.files();
    for (listing, at) in job.left_out.iter() {
        let data = &files[*at].data;
        if stage
            .put_new(&listing.kept, data)
            .await
            .map_err(|e| e.to_string())?
            == Created::New
        {
            crate::events::Moved::Staged.emit(name, data.len());
        }
    }
    let date = job.time.date_naive();
    let staged = Ledger::staged_key(name, date, &job.mailbox, &job.key);
    let created = stage
        .put_new_shared(&staged, bytes::Bytes::from_owner(job.message.clone()))
        .await
        .map_err(|e| e.to_string())?;
    // A message staged before is whatever that run rendered (a configuration or a version
    // since may render it otherwise): it is listed at the length delivery will read.
    let bytes = match created {
        Created::New => {
            crate::events::Moved::Staged.emit(name, job.message.len());
            job.message.len() as u64
        }
        Created::AlreadyExists => stage
            .size(&staged)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or(job.message.len() as u64),
    };
    let copy = StagedCopy {
        item_id: job.item_id.clone(),
        item_key: job.key.to_string(),
        time: job.time,
        mailbox: job.mailbox.clone(),
        via: job.via,
        mapped_by: job.mapped_by.clone(),
        user: job.user.clone(),
        staged,
        bytes,
        sha256: (created == Created::New).then(|| sha256_hex(&job.message)),
        left_out: job.left_out.iter().map(|(l, _)| l.clone()).collect(),
        fresh: created == Created::New && !ctx.check_every_copy,
    };
    ctx.index
        .add(copy)
        .await
        .map_err(|e| format!("the copy is staged, but the day's index could not list it ({e})"))
}

/// What every copy of a delivery shard shares. It owns (by `Arc`) what it shares, so that
/// each mailbox's copies are delivered by a task of their own, on whichever thread is free.
pub(super) struct DeliverContext {
    pub mailbox: Arc<dyn crate::mailbox::Mailbox>,
    pub stage: Arc<dyn crate::stage::Stage>,
    pub ledger: Ledger,
    /// The process's budget of bytes in flight.
    pub budget: Arc<super::budget::Budget>,
    pub connector: String,
    pub folder: String,
    pub day: NaiveDate,
    pub journal: Arc<Journal>,
    /// The store copies go into ([`crate::mailbox::Mailbox::destination`]).
    pub destination: String,
    /// Someone may have imported copies of the shard without recording them: every copy is
    /// looked for before it is imported.
    pub recovering: bool,
}

impl Archiver {
    /// What delivering a shard of `connector`'s `day` shares, its copies recorded in `journal`.
    pub(super) fn deliver_context(
        &self,
        connector: &Connector,
        day: NaiveDate,
        journal: &Arc<Journal>,
        recovering: bool,
    ) -> DeliverContext {
        DeliverContext {
            mailbox: self.mailbox.clone(),
            stage: self.stage.clone(),
            ledger: self.ledger.clone(),
            budget: self.budget.clone(),
            connector: connector.name.clone(),
            folder: connector.folder.clone(),
            day,
            journal: journal.clone(),
            destination: self.mailbox.destination(),
            recovering,
        }
    }
}

/// What delivering a copy did.
pub(super) struct Delivered {
    pub copy: StagedCopy,
    pub outcome: Result<Outcome, (Reason, String)>,
    /// Where the copy is held, when it failed for a reason a later run can cure.
    pub held: Option<String>,
}

/// Imports staged copies of one mailbox, each unless the journal records it or the mailbox
/// holds it already, those to import in one request where the store takes several
/// ([`crate::mailbox::Mailbox::append_all`]). When the store refuses the request, each copy
/// goes alone, so that only a copy refused itself is held; a copy its mailbox cannot take
/// now (unknown, refused) is held for a later run.
pub(super) async fn deliver(ctx: &DeliverContext, copies: Vec<StagedCopy>) -> Vec<Delivered> {
    let mut delivered = Vec::with_capacity(copies.len());
    let mut ready = Vec::with_capacity(copies.len());
    for copy in copies {
        let outcome = match prepare(ctx, &copy).await {
            Ok(Prepared::Known) => Ok(Outcome::SkippedDuplicate),
            Ok(Prepared::Ready(r)) if !r.already_there => {
                ready.push((copy, r));
                continue;
            }
            Ok(Prepared::Ready(r)) => record(ctx, &copy, &r).await,
            Err(failure) => Err(failure),
        };
        delivered.push(held_if_curable(ctx, copy, outcome).await);
    }
    let appended = {
        let deliveries: Vec<Delivery<'_>> = ready.iter().map(|(c, r)| r.delivery(ctx, c)).collect();
        ctx.mailbox.append_all(&deliveries).await
    };
    let alone = matches!(appended, Err(MailboxError::Rejected { .. })) && ready.len() > 1;
    for (copy, r) in ready {
        let outcome = match (&appended, alone) {
            (_, true) => import(ctx, &copy, r).await,
            (Ok(()), _) => record(ctx, &copy, &r).await,
            (Err(e), _) => Err(mailbox_failure(e)),
        };
        delivered.push(held_if_curable(ctx, copy, outcome).await);
    }
    delivered
}

/// Holds a copy whose delivery failed for a reason a later run can cure.
async fn held_if_curable(
    ctx: &DeliverContext,
    copy: StagedCopy,
    mut outcome: Result<Outcome, (Reason, String)>,
) -> Delivered {
    let mut held = None;
    if let Err((reason, detail)) = &outcome {
        if reason.is_holdable() {
            let run = ctx.journal.run_id();
            match ctx
                .ledger
                .hold_copy(&ctx.connector, ctx.day, run, &copy)
                .await
            {
                Ok(kept) => held = Some(kept),
                Err(e) => {
                    let detail = format!("{detail}; and the copy could not be held: {e}");
                    outcome = Err((Reason::StageError, detail));
                }
            }
        }
    }
    Delivered {
        copy,
        outcome,
        held,
    }
}

/// Where a copy stands before its import.
enum Prepared {
    /// The journal records it imported.
    Known,
    Ready(Ready),
}

/// A copy's staged message, read for its import.
struct Ready {
    place: CopyPlace,
    key: ItemKey,
    message: bytes::Bytes,
    /// The message's SHA-256, for its import record.
    sha256: String,
    /// The mailbox holds it already (looked for only when the copy may have been imported).
    already_there: bool,
}

impl Ready {
    fn delivery<'a>(&'a self, ctx: &'a DeliverContext, copy: &'a StagedCopy) -> Delivery<'a> {
        Delivery {
            mailbox: &copy.mailbox,
            folder: &ctx.folder,
            key: &self.key,
            time: copy.time,
            message: &self.message,
        }
    }
}

/// Looks the copy up where it may have been imported already (the journal, then the
/// mailbox) unless it is fresh, and reads its staged message.
async fn prepare(ctx: &DeliverContext, copy: &StagedCopy) -> Result<Prepared, (Reason, String)> {
    let stage = &ctx.stage;
    let stage_failure = |e: String| (Reason::StageError, e);
    let place = CopyPlace {
        destination: ctx.destination.clone(),
        mailbox: copy.mailbox.clone(),
        folder: ctx.folder.clone(),
        item_key: copy.item_key.clone(),
    };
    let check = ctx.recovering || !copy.fresh;
    if check
        && ctx
            .journal
            .knows(copy.time.date_naive(), &place)
            .await
            .map_err(|e| stage_failure(e.to_string()))?
    {
        return Ok(Prepared::Known);
    }
    let message = stage
        .get(&copy.staged)
        .await
        .map_err(|e| stage_failure(e.to_string()))?
        .map(bytes::Bytes::from)
        .ok_or_else(|| {
            stage_failure(format!(
                "the staged message {} is missing from {}; restore it, and the day's next run \
                 collects and delivers it again",
                copy.staged,
                stage.describe()
            ))
        })?;
    let sha256 = crate::message_bytes::work_on(&message, sha256_hex)
        .await
        .map_err(|e| stage_failure(e.to_string()))?;
    if let Some(expected) = copy.sha256.as_ref().filter(|e| **e != sha256) {
        return Err(stage_failure(format!(
            "the staged message {} in {} is not what this day's collection staged (SHA-256 \
             {expected}, now {sha256}): it was changed after staging; restore it from the \
             storage's versions or backups, and the day's next run delivers it",
            copy.staged,
            stage.describe()
        )));
    }
    let mut ready = Ready {
        place,
        key: ItemKey::from_hex(&copy.item_key),
        message,
        sha256,
        already_there: false,
    };
    if check {
        let delivery = ready.delivery(ctx, copy);
        ready.already_there = ctx
            .mailbox
            .contains(&delivery)
            .await
            .map_err(|e| mailbox_failure(&e))?;
    }
    Ok(Prepared::Ready(ready))
}

/// Imports a copy (unless the mailbox holds it already) and records it.
async fn import(
    ctx: &DeliverContext,
    copy: &StagedCopy,
    ready: Ready,
) -> Result<Outcome, (Reason, String)> {
    if !ready.already_there {
        let delivery = ready.delivery(ctx, copy);
        ctx.mailbox
            .append(&delivery)
            .await
            .map_err(|e| mailbox_failure(&e))?;
    }
    record(ctx, copy, &ready).await
}

/// Records an imported copy (or one found in its mailbox) in the journal.
async fn record(
    ctx: &DeliverContext,
    copy: &StagedCopy,
    ready: &Ready,
) -> Result<Outcome, (Reason, String)> {
    let Ready {
        place,
        message,
        sha256,
        ..
    } = ready;
    let record = ImportRecord {
        item_id: copy.item_id.clone(),
        item_key: copy.item_key.clone(),
        day: ctx.day,
        destination: Some(place.destination.clone()),
        mailbox: place.mailbox.clone(),
        folder: place.folder.clone(),
        mapped_by: Some(copy.mapped_by.clone()),
        run: None,
        staged: copy.staged.clone(),
        sha256: sha256.clone(),
        bytes: message.len() as u64,
        left_out: copy.left_out.clone(),
        imported_at: Utc::now(),
    };
    ctx.journal
        .record(copy.time.date_naive(), record)
        .await
        .map_err(|e| {
            (
                Reason::StageError,
                format!(
                    "imported, but the ledger could not record it ({e}); the next run \
                     checks the mailbox before importing again"
                ),
            )
        })?;
    if ready.already_there {
        return Ok(Outcome::SkippedDuplicate);
    }
    crate::events::Moved::Imported.emit(&ctx.connector, message.len());
    Ok(match copy.left_out.is_empty() {
        true => Outcome::Imported,
        false => Outcome::PartiallyImported,
    })
}

fn mailbox_failure(e: &MailboxError) -> (Reason, String) {
    let reason = match e {
        MailboxError::NoSuchMailbox(_) => Reason::UserMapping,
        MailboxError::Rejected { .. } => Reason::Rejected,
        MailboxError::Unavailable(_) => Reason::ImportError,
    };
    (reason, e.to_string())
}
