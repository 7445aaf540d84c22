//! One connector-day, end to end: pull, map, render, gate on size, stage, import, record.
//!
//! Items stream one at a time; the only per-day state is the status log (counts and
//! failures) and the set of unmapped users already reported.
//!
//! Crash safety: a copy is staged (create-only), then imported, then recorded in the ledger.
//! A crash between import and record leaves a copy the ledger does not know; the next attempt
//! at the day is "recovering" and asks the mailbox before importing, so nothing lands twice.

use crate::config::{Config, Partner};
use crate::item::{sha256_hex, Item, ItemKey};
use crate::ledger::{ImportRecord, Ledger};
use crate::mailbox::{Delivery, Mailbox, MailboxError};
use crate::mapping::{Mapper, MappingTable, Resolution};
use crate::render::{render, RenderContext};
use crate::report::{DayError, Exclusion, Failure, Reason, StatusLog};
use crate::sources::{Pulled, Source};
use crate::stage::{Created, Stage};
use crate::telemetry::{ItemOutcome, Outcome};
use crate::Result;
use chrono::{NaiveDate, Utc};
use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::watch;

/// A configured connector, ready to run.
pub struct Connector {
    pub name: String,
    pub partner: Partner,
    pub folder: String,
    pub source: Box<dyn Source>,
    pub mapper: Mapper,
}

/// Everything a run needs: connectors, the stage, the mailboxes and the ledger.
pub struct Archiver {
    connectors: Vec<Connector>,
    stage: Arc<dyn Stage>,
    mailbox: Arc<dyn Mailbox>,
    ledger: Ledger,
    max_item_bytes: u64,
    shutdown: watch::Receiver<bool>,
}

impl Archiver {
    /// Builds every enabled connector and backend from a validated configuration; mapping
    /// CSVs are read and checked here.
    pub fn from_config(config: &Config) -> Result<Archiver> {
        let region: phonenumber::country::Id = config
            .mapping
            .default_region
            .parse()
            .expect("validated at load");
        let mut connectors = Vec::new();
        for (name, c) in config.enabled_connectors() {
            let table = match &c.mapping_csv {
                Some(path) => Some(MappingTable::load(path, region, &config.mapping.domains)?),
                None => None,
            };
            let source = crate::sources::build(config, name, c)?;
            connectors.push(Connector {
                name: name.to_string(),
                partner: c.partner,
                folder: c.folder().to_string(),
                source,
                mapper: Mapper::new(table, c.use_email_property, config.mapping.domains.clone()),
            });
        }
        let mailbox = crate::mailbox::build(config)?;
        Ok(Archiver::new(
            connectors,
            crate::stage::build(config)?,
            mailbox,
            config.archiver.max_item_bytes,
        ))
    }

    pub fn new(
        connectors: Vec<Connector>,
        stage: Arc<dyn Stage>,
        mailbox: Arc<dyn Mailbox>,
        max_item_bytes: u64,
    ) -> Archiver {
        // Until `with_shutdown`, nothing ever asks the archiver to stop.
        let (_never, shutdown) = watch::channel(false);
        Archiver {
            connectors,
            ledger: Ledger::new(stage.clone()),
            stage,
            mailbox,
            max_item_bytes,
            shutdown,
        }
    }

    /// The same archiver, stopping between items once `shutdown` turns true: the day in
    /// progress is left open and the next run finishes it.
    pub fn with_shutdown(mut self, shutdown: watch::Receiver<bool>) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Whether a shutdown was requested.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Makes the stage ready (creates a missing container); errors mean nothing can run.
    pub async fn prepare(&self) -> Result<()> {
        Ok(self.stage.prepare().await?)
    }

    /// The same archiver importing into another mailbox backend.
    pub fn with_mailbox(mut self, mailbox: Arc<dyn Mailbox>) -> Self {
        self.mailbox = mailbox;
        self
    }

    pub fn connectors(&self) -> &[Connector] {
        &self.connectors
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Runs the given days for every connector (or the one named), each day to its end.
    /// A connector-day that fails outright is logged and reported as open; the others go on.
    pub async fn run_days(&self, days: &[NaiveDate], only: Option<&str>) -> Vec<DayResult> {
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
                let result = self.run_day(connector, day).await;
                if let Err(e) = &result {
                    tracing::error!(connector = %connector.name, day = %day, error = %e,
                        "the day could not be finished; it stays open for the next run");
                }
                results.push(DayResult {
                    connector: connector.name.clone(),
                    day,
                    log: result,
                });
            }
        }
        results
    }

    /// Processes one connector-day and writes its status log. The day is checkpointed only
    /// when nothing in it is left to retry.
    pub async fn run_day(&self, connector: &Connector, day: NaiveDate) -> Result<StatusLog> {
        let started = std::time::Instant::now();
        let owner = crate::ledger::owner_id();
        let mut lease = match self
            .ledger
            .acquire_day(&connector.name, day, &owner)
            .await?
        {
            Ok(lease) => lease,
            Err(busy) => {
                // Another daemon is on it: leave its day, its ledger and its report alone.
                tracing::warn!(connector = %connector.name, day = %day, %busy, "day skipped");
                let mut log = StatusLog::new(&connector.name, day);
                log.errors.push(DayError {
                    reason: "busy".into(),
                    detail: busy,
                });
                log.finish(false);
                return Ok(log);
            }
        };
        let result = self
            .run_leased_day(connector, day, &mut lease, started)
            .await;
        // Given up whatever happened, so that the next run need not wait for it to expire.
        if let Err(e) = self.ledger.release(lease).await {
            tracing::warn!(connector = %connector.name, day = %day, error = %e,
                "could not release the day's lease; it expires on its own");
        }
        result
    }

    async fn run_leased_day(
        &self,
        connector: &Connector,
        day: NaiveDate,
        lease: &mut crate::ledger::DayLease,
        started: std::time::Instant,
    ) -> Result<StatusLog> {
        let mut renewed_at = std::time::Instant::now();
        let recovering = self.ledger.begin_day(&connector.name, day).await?;
        tracing::info!(connector = %connector.name, day = %day, recovering,
            source = %connector.source.describe(), "starting day");
        let mut run = DayRun {
            archiver: self,
            connector,
            day,
            recovering,
            log: StatusLog::new(&connector.name, day),
            reported_unmapped: HashSet::new(),
            seen: HashSet::new(),
            stage_down: None,
        };
        match connector.source.open(day).await {
            Err(e) => run.day_error(e.reason(), e.to_string()),
            Ok(mut stream) => loop {
                if renewed_at.elapsed() >= crate::ledger::LEASE_RENEW_EVERY {
                    renewed_at = std::time::Instant::now();
                    if !self.ledger.renew(lease).await? {
                        run.day_error(
                            "lease_lost",
                            "another comms-archiver took over this day's lease; the rest of the \
                             day is left to it"
                                .into(),
                        );
                        break;
                    }
                }
                if let Some(why) = run.stage_down.take() {
                    run.day_error(
                        "stage_unavailable",
                        format!("{why}; the rest of the day is left for the next run"),
                    );
                    break;
                }
                if self.is_shutting_down() {
                    run.day_error(
                        "interrupted",
                        "shutdown requested before the day was finished; the next run \
                         continues it"
                            .into(),
                    );
                    break;
                }
                match stream.next().await {
                    Ok(None) => break,
                    Ok(Some(Pulled::Item(item))) => {
                        run.log.available_from_source += 1;
                        run.item(*item).await;
                    }
                    Ok(Some(Pulled::Excluded {
                        partner_id,
                        reason,
                        detail,
                    })) => {
                        run.log.available_from_source += 1;
                        tracing::info!(connector = %connector.name, day = %day,
                            item_id = %partner_id, reason = %reason, %detail, "item excluded");
                        run.log.exclude(Exclusion {
                            item_id: partner_id,
                            reason,
                            detail,
                        });
                    }
                    Ok(Some(Pulled::Invalid {
                        location,
                        partner_id,
                        reason,
                    })) => {
                        run.log.available_from_source += 1;
                        let item_id = partner_id.unwrap_or_else(|| location.clone());
                        run.fail(
                            &item_id,
                            "",
                            "(unknown)".into(),
                            None,
                            Reason::InvalidPayload,
                            format!("{location}: {reason}"),
                        );
                    }
                    Err(e) => {
                        run.day_error(e.reason(), e.to_string());
                        break;
                    }
                }
            },
        }
        let mut log = run.log;
        let complete = log.nothing_to_retry();
        log.finish(complete);
        if log.errors.iter().any(|e| e.reason == "lease_lost") {
            // The day belongs to the new holder now, report included.
            return Ok(log);
        }
        self.ledger.write_report(&log).await?;
        let name = connector.name.clone();
        if complete {
            self.ledger.complete_day(&name, day).await?;
            if let Some(checkpoint) = self.ledger.checkpoint(&name).await? {
                let midnight = checkpoint.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
                metrics::gauge!("comms_archiver_last_complete_day_timestamp_seconds", "connector" => name.clone())
                    .set(midnight.timestamp() as f64);
            }
        }
        let state = if complete { "complete" } else { "open" };
        metrics::counter!("comms_archiver_days_total", "connector" => name.clone(), "state" => state)
            .increment(1);
        metrics::histogram!("comms_archiver_day_duration_seconds", "connector" => name)
            .record(started.elapsed().as_secs_f64());
        tracing::info!(
            connector = %connector.name, day = %day, complete,
            available_from_source = log.available_from_source,
            available_for_import = log.available_for_import,
            imported = log.imported,
            skipped_duplicates = log.skipped_duplicates,
            failed = log.failed,
            "day finished"
        );
        Ok(log)
    }
}

/// The outcome of one connector-day in a run.
#[derive(Debug)]
pub struct DayResult {
    pub connector: String,
    pub day: NaiveDate,
    pub log: Result<StatusLog>,
}

impl DayResult {
    /// Whether the day is finished (nothing left for a later run).
    pub fn is_complete(&self) -> bool {
        self.log.as_ref().is_ok_and(|l| l.complete)
    }
}

/// The state of one connector-day while it runs.
struct DayRun<'a> {
    archiver: &'a Archiver,
    connector: &'a Connector,
    day: NaiveDate,
    recovering: bool,
    log: StatusLog,
    reported_unmapped: HashSet<String>,
    /// Keys of the items already handled in this run (16 bytes each), so that a record the
    /// partner repeats is a duplicate, never a second import or a second failure.
    seen: HashSet<u128>,
    /// Set when the stage failed: the rest of the day is left for the next run instead of
    /// failing item after item against a store that is down.
    stage_down: Option<String>,
}

impl DayRun<'_> {
    fn day_error(&mut self, reason: &str, detail: String) {
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

    /// Maps, renders and gates one item, then delivers a copy to every mapped mailbox.
    async fn item(&mut self, item: Item) {
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
        for participant in &item.participants {
            match self.connector.mapper.resolve(participant, item.time) {
                Resolution::Mailbox { address, .. } => {
                    if !targets.contains(&address) {
                        targets.push(address.clone());
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
            return;
        }
        if targets.is_empty() {
            self.fail(
                &item.partner_id,
                key.as_str(),
                archived_user,
                None,
                Reason::UserMapping,
                "no participant maps to a mailbox (mapping CSV, then email property)".into(),
            );
            return;
        }

        let ctx = RenderContext {
            connector: name,
            partner: self.connector.partner.as_str(),
            invalid_domain: self.connector.partner.invalid_domain(),
        };
        let rendered = match render(&item, &key, &ctx, &per_participant) {
            Ok(bytes) => bytes,
            Err(e) => {
                let detail = e.to_string();
                return self.fail_copies(
                    &item,
                    &key,
                    &targets,
                    &archived_user,
                    Reason::RenderError,
                    &detail,
                );
            }
        };
        let size = rendered.len() as u64;
        if size > self.archiver.max_item_bytes {
            let detail = format!(
                "rendered size {size} bytes exceeds the limit of {} bytes",
                self.archiver.max_item_bytes
            );
            return self.fail_copies(
                &item,
                &key,
                &targets,
                &archived_user,
                Reason::SizeExceeded,
                &detail,
            );
        }
        for mailbox in &targets {
            self.deliver(&item, &key, mailbox, &rendered, &archived_user)
                .await;
        }
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

    /// Stages and imports one copy, unless the ledger (or, when recovering, the mailbox)
    /// already has it.
    async fn deliver(
        &mut self,
        item: &Item,
        key: &ItemKey,
        mailbox: &str,
        rendered: &[u8],
        user: &str,
    ) {
        let name = self.connector.name.clone();
        let ledger = &self.archiver.ledger;
        let stage_failure = |e: crate::Error| (Reason::StageError, e.to_string());
        let outcome: std::result::Result<Outcome, (Reason, String)> = async {
            if ledger
                .is_imported(&name, mailbox, key)
                .await
                .map_err(stage_failure)?
            {
                return Ok(Outcome::SkippedDuplicate);
            }
            let staged = Ledger::staged_key(&name, self.day, mailbox, key);
            let message: Cow<[u8]> = match self.archiver.stage.put_new(&staged, rendered).await {
                Ok(Created::New) => {
                    metrics::counter!("comms_archiver_bytes_staged_total", "connector" => name.clone())
                        .increment(rendered.len() as u64);
                    Cow::Borrowed(rendered)
                }
                // Staged by an earlier run: the stage is what gets imported.
                Ok(Created::AlreadyExists) => match self.archiver.stage.get(&staged).await {
                    Ok(Some(bytes)) => Cow::Owned(bytes),
                    Ok(None) => Cow::Borrowed(rendered),
                    Err(e) => return Err(stage_failure(e.into())),
                },
                Err(e) => return Err(stage_failure(e.into())),
            };
            let delivery = Delivery {
                mailbox,
                folder: &self.connector.folder,
                key,
                time: item.time,
                message: &message,
            };
            let already_there = self.recovering
                && self
                    .archiver
                    .mailbox
                    .contains(&delivery)
                    .await
                    .map_err(mailbox_failure)?;
            if !already_there {
                self.archiver
                    .mailbox
                    .append(&delivery)
                    .await
                    .map_err(mailbox_failure)?;
            }
            let record = ImportRecord {
                item_id: item.partner_id.clone(),
                item_key: key.to_string(),
                day: self.day,
                mailbox: mailbox.to_string(),
                folder: self.connector.folder.clone(),
                staged,
                sha256: sha256_hex(&message),
                bytes: message.len() as u64,
                imported_at: Utc::now(),
            };
            ledger.record_import(&name, &record).await.map_err(|e| {
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
            metrics::counter!("comms_archiver_bytes_imported_total", "connector" => name.clone())
                .increment(message.len() as u64);
            Ok(Outcome::Imported)
        }
        .await;

        match outcome {
            Ok(outcome) => {
                self.log.available_for_import += 1;
                let detail = match outcome {
                    Outcome::Imported => {
                        self.log.imported += 1;
                        ""
                    }
                    _ => {
                        self.log.skipped_duplicates += 1;
                        "already in the mailbox"
                    }
                };
                self.emit(
                    key.as_str(),
                    &item.partner_id,
                    Some(mailbox),
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
                    && self.reported_unmapped.insert(mailbox.to_string())
                {
                    tracing::warn!(connector = %self.connector.name, day = %self.day, mailbox,
                        "the mapped address has no mailbox; fix the mapping or create the mailbox");
                    self.log.unmapped_users.push(mailbox.to_string());
                }
                let id = item.partner_id.as_str();
                self.fail(
                    id,
                    key.as_str(),
                    user.to_string(),
                    Some(mailbox),
                    reason,
                    detail,
                )
            }
        }
    }
}

fn mailbox_failure(e: MailboxError) -> (Reason, String) {
    let reason = match &e {
        MailboxError::NoSuchMailbox(_) => Reason::UserMapping,
        MailboxError::Rejected { .. } => Reason::Rejected,
        MailboxError::Unavailable(_) => Reason::ImportError,
    };
    (reason, e.to_string())
}
