//! One copy of an item for one mailbox: stage it, import it, record it. Copies share nothing
//! mutable, so many run at once; what happened goes back to the day as a [`CopyResult`].
//!
//! Crash safety: staged (create-only, under the item's date), then imported, then recorded in
//! the run's journal. A copy whose staged message did not exist before was never imported by
//! any run, so it is imported at once: one stage write per copy. Any other copy (staged by an
//! earlier run, or met again in a day being retried) is imported only if the journal does not
//! know it and the mailbox does not hold it, so nothing lands twice.

use super::{Archiver, Connector};
use crate::item::{sha256_hex, ItemKey};
use crate::ledger::{CopyPlace, ImportRecord, Journal, Ledger};
use crate::mailbox::{Delivery, MailboxError};
use crate::report::Reason;
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
}

/// What happened to a copy.
pub(super) struct CopyResult {
    pub job: CopyJob,
    pub outcome: Result<Outcome, (Reason, String)>,
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
pub(super) async fn deliver(ctx: &CopyContext<'_>, job: CopyJob) -> CopyResult {
    let outcome = attempt(ctx, &job).await;
    CopyResult { job, outcome }
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
    Ok(Outcome::Imported)
}

fn mailbox_failure(e: MailboxError) -> (Reason, String) {
    let reason = match &e {
        MailboxError::NoSuchMailbox(_) => Reason::UserMapping,
        MailboxError::Rejected { .. } => Reason::Rejected,
        MailboxError::Unavailable(_) => Reason::ImportError,
    };
    (reason, e.to_string())
}
