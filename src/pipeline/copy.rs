//! One copy of an item for one mailbox: stage it, import it, record it. Copies share nothing
//! mutable, so many run at once; what happened goes back to the day as a [`CopyResult`].
//!
//! Crash safety: staged (create-only, under the item's date), then imported, then recorded in
//! the run's journal. A copy whose staged message did not exist before was never imported by
//! any run, so it is imported at once: one stage write per copy. Any other copy (staged by an
//! earlier run, or met again in a day being retried) is imported only if the journal does not
//! know it and the mailbox does not hold it, so nothing lands twice.
//!
//! A copy that cannot be delivered yet (its mailbox unknown or refusing it) has its item
//! held in the stage ([`crate::ledger::HeldItem`]) for a re-drive; so does an item whose
//! copies map to no one ([`HoldJob`]). A hold that cannot be written fails the copy as a
//! stage error: the day stays open and nothing is dropped.

use super::{Archiver, Connector};
use crate::item::{sha256_hex, Item, ItemKey};
use crate::ledger::{CopyPlace, ImportRecord, Journal, Ledger};
use crate::mailbox::{Delivery, MailboxError};
use crate::report::{LeftOut, Reason};
use crate::stage::Created;
use crate::telemetry::Outcome;
use chrono::{DateTime, NaiveDate, Utc};
use std::borrow::Cow;
use std::sync::Arc;

/// A copy to stage and import.
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
    /// The item, to hold it when its mailbox cannot take the copy.
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

/// One piece of a day's work: a copy to deliver, or an item to hold.
pub(super) enum Work {
    Copy(CopyJob),
    Hold(HoldJob),
}

/// What a piece of work did.
pub(super) enum Done {
    Copy(CopyResult),
    Hold(HoldResult),
}

impl Work {
    /// The bytes it keeps in memory while in flight.
    pub fn bytes(&self) -> u64 {
        match self {
            Work::Copy(job) => job.message.len() as u64,
            Work::Hold(job) => job.item.content.payload_bytes(),
        }
    }
}

/// Does one piece of work.
pub(super) async fn perform(ctx: &CopyContext<'_>, work: Work) -> Done {
    match work {
        Work::Copy(job) => Done::Copy(deliver(ctx, job).await),
        Work::Hold(job) => {
            let ledger = &ctx.archiver.ledger;
            let run = ctx.journal.run_id();
            let outcome = ledger
                .hold(&ctx.connector.name, ctx.day, run, &job.item)
                .await
                .map_err(|e| e.to_string());
            Done::Hold(HoldResult { job, outcome })
        }
    }
}

/// What happened to a copy.
pub(super) struct CopyResult {
    pub job: CopyJob,
    pub outcome: Result<Outcome, (Reason, String)>,
    /// Where the item is held, when the copy failed for a reason a later run can cure.
    pub held: Option<String>,
}

/// What every copy of a connector-day shares.
pub(super) struct CopyContext<'a> {
    pub archiver: &'a Archiver,
    pub connector: &'a Connector,
    pub day: NaiveDate,
    /// Whether an earlier attempt at the day exists.
    pub recovering: bool,
    /// Whether an earlier attempt at the day predates the journal: it staged copies under the
    /// day rather than their item's date, so a copy staged for the first time now may have
    /// been imported then.
    pub check_every_copy: bool,
    pub journal: &'a Journal,
    /// The store copies go into ([`crate::mailbox::Mailbox::destination`]).
    pub destination: String,
}

/// Stages and imports one copy, unless the journal records it or the mailbox holds it
/// already.
/// A copy its mailbox cannot take now (unknown, refused) is held for a later run.
async fn deliver(ctx: &CopyContext<'_>, job: CopyJob) -> CopyResult {
    let mut outcome = attempt(ctx, &job).await;
    let mut held = None;
    if let Err((reason, detail)) = &outcome {
        if reason.is_holdable() {
            let ledger = &ctx.archiver.ledger;
            let run = ctx.journal.run_id();
            match ledger
                .hold(&ctx.connector.name, ctx.day, run, &job.item)
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
    CopyResult { job, outcome, held }
}

async fn attempt(ctx: &CopyContext<'_>, job: &CopyJob) -> Result<Outcome, (Reason, String)> {
    let name = ctx.connector.name.as_str();
    let (stage, mailbox) = (&ctx.archiver.stage, &ctx.archiver.mailbox);
    let stage_failure = |e: crate::Error| (Reason::StageError, e.to_string());
    let date = job.time.date_naive();
    let place = CopyPlace {
        destination: ctx.destination.clone(),
        mailbox: job.mailbox.clone(),
        folder: ctx.connector.folder.clone(),
        item_key: job.key.to_string(),
    };
    // A retried day skips what its earlier attempts recorded without touching the stage.
    if ctx.recovering
        && ctx
            .journal
            .recorded(date, &place)
            .await
            .map_err(stage_failure)?
    {
        return Ok(Outcome::SkippedDuplicate);
    }
    // The files left out of the message are kept whole before the message goes anywhere.
    let files = job.item.content.files();
    for (listing, at) in job.left_out.iter() {
        let data = &files[*at].data;
        if stage
            .put_new(&listing.kept, data)
            .await
            .map_err(|e| stage_failure(e.into()))?
            == Created::New
        {
            crate::events::Moved::Staged.emit(name, data.len());
        }
    }
    let staged = Ledger::staged_key(name, date, &job.mailbox, &job.key);
    let rendered: &[u8] = &job.message;
    let created = stage
        .put_new(&staged, rendered)
        .await
        .map_err(|e| stage_failure(e.into()))?;
    let first_attempt = created == Created::New && !ctx.check_every_copy;
    let mut message: Cow<[u8]> = Cow::Borrowed(rendered);
    if created == Created::New {
        crate::events::Moved::Staged.emit(name, rendered.len());
    }
    if !first_attempt {
        if ctx
            .journal
            .knows(date, &place)
            .await
            .map_err(stage_failure)?
        {
            return Ok(Outcome::SkippedDuplicate);
        }
        // Staged by an earlier run: the stage is what gets imported.
        if created == Created::AlreadyExists {
            if let Some(bytes) = stage
                .get(&staged)
                .await
                .map_err(|e| stage_failure(e.into()))?
            {
                message = Cow::Owned(bytes);
            }
        }
    }
    let delivery = Delivery {
        mailbox: &job.mailbox,
        folder: &ctx.connector.folder,
        key: &job.key,
        time: job.time,
        message: &message,
    };
    let already_there =
        !first_attempt && mailbox.contains(&delivery).await.map_err(mailbox_failure)?;
    if !already_there {
        mailbox.append(&delivery).await.map_err(mailbox_failure)?;
    }
    let record = ImportRecord {
        item_id: job.item_id.clone(),
        item_key: job.key.to_string(),
        day: ctx.day,
        destination: Some(place.destination),
        mailbox: place.mailbox,
        folder: place.folder,
        mapped_by: Some(job.mapped_by.clone()),
        run: None,
        staged,
        sha256: sha256_hex(&message),
        bytes: message.len() as u64,
        left_out: job.left_out.iter().map(|(l, _)| l.clone()).collect(),
        imported_at: Utc::now(),
    };
    ctx.journal.record(date, record).await.map_err(|e| {
        (
            Reason::StageError,
            format!(
                "imported, but the ledger could not record it ({e}); the next run \
                 checks the mailbox before importing again"
            ),
        )
    })?;
    if already_there {
        return Ok(Outcome::SkippedDuplicate);
    }
    crate::events::Moved::Imported.emit(name, message.len());
    Ok(match job.left_out.is_empty() {
        true => Outcome::Imported,
        false => Outcome::PartiallyImported,
    })
}

fn mailbox_failure(e: MailboxError) -> (Reason, String) {
    let reason = match &e {
        MailboxError::NoSuchMailbox(_) => Reason::UserMapping,
        MailboxError::Rejected { .. } => Reason::Rejected,
        MailboxError::Unavailable(_) => Reason::ImportError,
    };
    (reason, e.to_string())
}
