//! One connector-day, end to end, in two phases that meet at the stage. Collecting pulls,
//! maps, renders, gates on size and stages every copy, listing it in the day's index by
//! mailbox shard; delivering takes the index shard by shard and imports each mailbox's
//! copies together, and records them.
//!
//! Records stream from the source one at a time (read ahead by one); up to `max_in_flight`
//! copies are staged at once, and delivered at once, within `max_in_flight_bytes` (one budget
//! for every connector-day at work in the process, [`budget`]), so memory stays bounded by a
//! few messages and one shard's index however large the day and however many connectors. [`day`]
//! turns records into copy jobs and their results into the status log; [`copy`] stages one
//! copy, and imports and records one; [`deliver`] takes the shards.

pub(crate) mod budget;
mod config;
mod copy;
mod day;
mod deliver;
mod oversize;
mod reader;
mod redrive;

pub use config::{
    ArchiverConfig, Oversize, DEFAULT_DELIVERY_SHARDS, DEFAULT_MAX_IN_FLIGHT_BYTES,
    DEFAULT_MAX_ITEM_BYTES, DEFAULT_MAX_ORIGINAL_BYTES,
};
pub use redrive::Redrive;

use crate::ledger::{Collected, DaySession, Ledger, Opened, Place};
use crate::mailbox::Mailbox;
use crate::mapping::Mapper;
use crate::report::StatusLog;
use crate::sources::Partner;
use crate::sources::{ItemStream, Source};
use crate::stage::Stage;
use crate::Result;
use chrono::NaiveDate;
use copy::CollectContext;
use day::DayRun;
use futures::stream::{FuturesUnordered, StreamExt};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// Copies in flight at once unless configured (`archiver.max_in_flight`).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;

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
    /// What becomes of a copy over `max_item_bytes`.
    oversize: Oversize,
    /// Copies staged and imported at once.
    max_in_flight: usize,
    /// Bytes of rendered messages in flight at once (a larger single message goes alone).
    max_in_flight_bytes: u64,
    /// Room for them, shared by every connector-day collected or delivered at once.
    budget: Arc<budget::Budget>,
    /// Mailbox shards a day's delivery is split into (the day's first collection fixes it).
    delivery_shards: u32,
    shutdown: watch::Receiver<bool>,
    /// Where the digest of what needs a person goes after each run, if anywhere.
    alerts: Option<(Arc<crate::alerts::Alerter>, crate::alerts::AlertsConfig)>,
}

impl Archiver {
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
            oversize: Oversize::Skip,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_in_flight_bytes: DEFAULT_MAX_IN_FLIGHT_BYTES,
            budget: budget::Budget::new(DEFAULT_MAX_IN_FLIGHT_BYTES),
            delivery_shards: DEFAULT_DELIVERY_SHARDS,
            shutdown,
            alerts: None,
        }
    }

    /// The same archiver sending a digest of what needs a person after each run.
    pub fn with_alerts(
        mut self,
        alerter: crate::alerts::Alerter,
        settings: crate::alerts::AlertsConfig,
    ) -> Self {
        self.alerts = Some((Arc::new(alerter), settings));
        self
    }

    /// After a run over `days` that started at `since`: the digest of what those days left
    /// for a person, to every configured channel. Never fails the run: a channel that
    /// cannot take it gets it again after the next run.
    pub async fn send_digest(&self, days: &[NaiveDate], since: chrono::DateTime<chrono::Utc>) {
        if let Some((alerter, settings)) = &self.alerts {
            let digest = crate::alerts::gather(self, days, since, settings).await;
            alerter.send(&self.stage, &digest).await;
        }
    }

    /// The same archiver treating copies over the size limit as `oversize` says.
    pub fn with_oversize(mut self, oversize: Oversize) -> Self {
        self.oversize = oversize;
        self
    }

    /// The same archiver with up to `n` copies in flight at once.
    pub fn with_max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// The same archiver with at most `bytes` of rendered messages in flight at once.
    pub fn with_max_in_flight_bytes(mut self, bytes: u64) -> Self {
        self.max_in_flight_bytes = bytes.max(1);
        self.budget = budget::Budget::new(self.max_in_flight_bytes);
        self
    }

    /// The same archiver splitting a day's delivery into `n` mailbox shards.
    pub fn with_delivery_shards(mut self, n: u32) -> Self {
        self.delivery_shards = n.max(1);
        self
    }

    /// The same archiver with leases that last `secs` without renewal.
    pub fn with_lease_secs(mut self, secs: u64) -> Self {
        self.ledger = self.ledger.clone().with_lease_secs(secs);
        self
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

    /// The same archiver keeping its stage, and so its ledger, elsewhere.
    pub fn with_stage(mut self, stage: Arc<dyn Stage>) -> Self {
        self.ledger = self.ledger.on(stage.clone());
        self.stage = stage;
        self
    }

    pub fn connectors(&self) -> &[Connector] {
        &self.connectors
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn stage(&self) -> &Arc<dyn Stage> {
        &self.stage
    }

    pub fn mailbox(&self) -> &Arc<dyn Mailbox> {
        &self.mailbox
    }

    /// Runs the given days for every connector (or the one named), each day to its end.
    /// A day another daemon holds is shared once this daemon has run every day it could take
    /// itself: daemons sharing a stage collect different connector-days at once rather than
    /// wait behind one holder's collection. A day complete before the run began is run again,
    /// as asked; one that another daemon finished meanwhile is not: its reconciliation is the
    /// answer. A connector-day that fails outright is logged and reported as open; the others
    /// go on. The results come in the order of the days asked, every day asked among them: a
    /// day a shutdown kept this run from is reported open, not left out.
    pub async fn run_days(&self, days: &[NaiveDate], only: Option<&str>) -> Vec<DayResult> {
        let asked: Vec<(&Connector, NaiveDate)> = self
            .connectors
            .iter()
            .filter(|c| only.is_none_or(|o| o == c.name))
            .flat_map(|c| days.iter().map(move |&day| (c, day)))
            .collect();
        let mut complete_before = Vec::with_capacity(asked.len());
        for &(connector, day) in &asked {
            complete_before.push(self.is_complete(connector, day).await);
        }
        let mut results: Vec<Option<DayResult>> = Vec::new();
        let mut held_elsewhere = Vec::new();
        for (&(connector, day), complete_before) in asked.iter().zip(complete_before) {
            if self.is_shutting_down() {
                results.push(Some(DayResult::not_reached(connector, day)));
                continue;
            }
            let turn = if !complete_before && self.is_complete(connector, day).await {
                Ok(DayTurn::HeldElsewhere(
                    "another comms-archiver finished it during this run".into(),
                ))
            } else {
                self.take_day(connector, day).await
            };
            let log = match turn {
                Ok(DayTurn::Ran(log)) => Ok(*log),
                Ok(DayTurn::HeldElsewhere(holder)) => {
                    held_elsewhere.push((results.len(), connector, day, holder));
                    results.push(None);
                    continue;
                }
                Err(e) => Err(e),
            };
            results.push(Some(DayResult::logged(connector, day, log)));
        }
        for (slot, connector, day, holder) in held_elsewhere {
            if self.is_shutting_down() {
                results[slot] = Some(DayResult::not_reached(connector, day));
                continue;
            }
            let log = self.help_with_day(connector, day, holder).await;
            results[slot] = Some(DayResult::logged(connector, day, log));
        }
        self.mailbox.close_idle().await;
        results.into_iter().flatten().collect()
    }

    /// Whether the day is complete; a stage that cannot say is taken as no (running the day
    /// then says what is wrong with it).
    async fn is_complete(&self, connector: &Connector, day: NaiveDate) -> bool {
        self.ledger
            .is_complete(&connector.name, day)
            .await
            .unwrap_or(false)
    }

    /// Runs one connector-day to its end when this daemon can take it. A day another daemon
    /// holds is left as it is, for [`Archiver::help_with_day`] once this daemon's own days
    /// are done.
    pub async fn take_day(&self, connector: &Connector, day: NaiveDate) -> Result<DayTurn> {
        match self.ledger.open_day(&connector.name, day).await? {
            Opened::Session(session) => Ok(DayTurn::Ran(Box::new(
                self.run_session(connector, *session).await?,
            ))),
            Opened::Busy(holder) => Ok(DayTurn::HeldElsewhere(holder)),
        }
    }

    /// Processes one connector-day and writes its status log. The day is checkpointed only
    /// when nothing in it is left to retry. A day another daemon holds is shared: this one
    /// delivers shards of it until none is left.
    pub async fn run_day(&self, connector: &Connector, day: NaiveDate) -> Result<StatusLog> {
        match self.take_day(connector, day).await? {
            DayTurn::Ran(log) => Ok(*log),
            DayTurn::HeldElsewhere(holder) => self.help_with_day(connector, day, holder).await,
        }
    }

    /// Runs a day this daemon holds to its end: collects it (or takes the collection an
    /// earlier run of it left whole), delivers it, and finishes it.
    async fn run_session(&self, connector: &Connector, session: DaySession) -> Result<StatusLog> {
        let started = std::time::Instant::now();
        let incidents = crate::incidents::Recorder::default();
        let run = crate::incidents::within(
            Some(incidents.clone()),
            self.collect_and_deliver(connector, &session),
        )
        .await;
        let mut log = match run {
            Ok(log) => log,
            Err(e) => {
                session.abandon().await;
                return Err(e);
            }
        };
        log.incidents.extend(incidents.list());
        let place = Place {
            destination: self.mailbox.destination(),
            folder: connector.folder.clone(),
        };
        log.destination = Some(format!("{}, folder '{}'", place.destination, place.folder));
        let finished = session.finish(&mut log, &place).await?;
        crate::events::DayFinished {
            log: &log,
            checkpoint: finished.checkpoint,
            took: started.elapsed(),
        }
        .emit();
        Ok(log)
    }

    /// The day's newest collection, when a run that stopped before its end left it whole:
    /// it is delivered rather than read from the partner again.
    async fn resumable_collection(
        &self,
        connector: &str,
        day: NaiveDate,
    ) -> Result<Option<Collected>> {
        let Some(collected) = self.ledger.newest_collection(connector, day).await? else {
            return Ok(None);
        };
        if !collected.whole || collected.redrive || self.ledger.is_complete(connector, day).await? {
            return Ok(None);
        }
        // A run that ended after the collection delivered it as far as it could: the next
        // run reads the day again.
        let ended_since = self
            .ledger
            .run_logs(connector, day)
            .await?
            .iter()
            .any(|r| collected.ended_after(r));
        Ok((!ended_since).then_some(collected))
    }

    /// Collects the day (unless a whole collection of it waits) and delivers it; the
    /// status log, to finish.
    async fn collect_and_deliver(
        &self,
        connector: &Connector,
        session: &DaySession,
    ) -> Result<StatusLog> {
        let (name, day) = (connector.name.as_str(), session.day());
        tracing::info!(connector = name, day = %day, recovering = session.recovering(),
            source = %connector.source.describe(), "starting day");
        let collected = match self.resumable_collection(name, day).await? {
            Some(collected) => {
                tracing::info!(connector = name, day = %day, collected = %collected.attempt,
                    "an earlier run collected the whole day; delivering what is left of it");
                collected
            }
            None => {
                let run = DayRun::new(self, connector, day);
                let records = connector.source.open(day).await;
                match self.collect(run, session, records, Vec::new()).await? {
                    Ok(collected) => collected,
                    Err(log) => return Ok(log),
                }
            }
        };
        self.deliver_collection(connector, session, collected).await
    }

    /// Why the day must stop taking records now, if it must: the lease was lost, the stage
    /// is down, or a shutdown was asked for. Renews the lease when it is due.
    async fn stop_reason(
        &self,
        run: &mut DayRun<'_>,
        session: &DaySession,
    ) -> Result<Option<(&'static str, String)>> {
        if let Some(why) = run.stage_down.take() {
            let detail = format!("{why}; the rest of the day is left for the next run");
            return Ok(Some(("stage_unavailable", detail)));
        }
        Ok(self
            .delivery_stop(Some(session))
            .await?
            .map(|s| (s.reason, s.detail)))
    }

    /// Collects: takes records from `records` (and, in a re-drive, the held copies
    /// `restaged`) and stages their copies, at most `max_in_flight` pieces and
    /// `max_in_flight_bytes` at once, until the records end or the day must stop. Then writes
    /// the index's last batches and its marker: the collection, to deliver; or the status
    /// log, to finish, when what was collected is not to be delivered now (the lease lost,
    /// the stage down, a shutdown).
    async fn collect(
        &self,
        mut run: DayRun<'_>,
        session: &DaySession,
        records: std::result::Result<Box<dyn ItemStream>, crate::sources::SourceError>,
        restaged: Vec<crate::ledger::HeldCopy>,
    ) -> Result<std::result::Result<Collected, StatusLog>> {
        let (connector, day) = (run.connector, run.day);
        let index = self
            .ledger
            .collect_index(
                &connector.name,
                day,
                session.journal().run_id(),
                self.delivery_shards,
            )
            .await?;
        let ctx = CollectContext {
            archiver: self,
            connector,
            day,
            check_every_copy: session.earlier() == crate::ledger::Earlier::BeforeJournal,
            run: session.journal().run_id(),
            index: &index,
        };
        for held in restaged {
            let copy = run.restaged(held);
            if let Err(e) = index.add(copy).await {
                run.day_error(
                    "stage_unavailable",
                    format!("the day's index could not list a held copy ({e})"),
                );
            }
        }
        let mut stopped = false;
        match records {
            Err(e) => run.day_error(e.reason(), e.to_string()),
            Ok(stream) => {
                // The source reads ahead by one record in its own task: a channel receive can
                // be interrupted safely, a partner stream in the middle of a page cannot.
                let (records, mut pulled) = mpsc::channel(1);
                let mut reader = tokio::spawn(crate::incidents::within(
                    crate::incidents::current(),
                    reader::read_source(stream, records, self.budget.clone()),
                ));
                let mut copies = FuturesUnordered::new();
                let mut taking = true;
                // A partner that stalls between records (its retries, a slow page) must not
                // let the day's lease lapse: while waiting, the lease is renewed on time.
                let mut renew = tokio::time::interval(self.ledger.lease_renew_every());
                renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while taking || !copies.is_empty() {
                    if taking {
                        if let Some((reason, detail)) = self.stop_reason(&mut run, session).await? {
                            run.day_error(reason, detail);
                            stopped = true;
                            taking = false;
                            continue;
                        }
                    }
                    tokio::select! {
                        _ = renew.tick(), if taking => {}
                        Some(result) = copies.next(), if !copies.is_empty() => {
                            run.apply(result);
                        }
                        // The room is shared with the other connector-days at work: the reader
                        // reads a record while any is left, its copies take their room as
                        // they are made, and the record's is given back after.
                        read = pulled.recv(), if taking
                            && copies.len() < self.max_in_flight => match read {
                            Some((Ok(Some(record)), _read_room)) => {
                                for work in run.pulled(record) {
                                    let room = self.budget.take_now(work.bytes());
                                    let ctx = &ctx;
                                    copies.push(async move {
                                        let done = copy::perform(ctx, work).await;
                                        drop(room);
                                        done
                                    });
                                }
                            }
                            Some((Ok(None), _)) => taking = false,
                            // The reader is gone without saying the day ended: whatever it
                            // had not read yet is still at the partner, so the day stays open.
                            None => {
                                let detail = reader::reader_died(&mut reader).await;
                                tracing::error!(connector = %connector.name, day = %day,
                                    error = %detail, "the partner records stopped before their end");
                                run.day_error("source_reader_died", detail);
                                taking = false;
                            }
                            Some((Err(e), _)) => {
                                run.day_error(e.reason(), e.to_string());
                                taking = false;
                            }
                        },
                    }
                }
                reader.abort();
            }
        }
        // A stage error that came with the last copies stops the day as one before them would.
        if let Some(why) = run.stage_down.take() {
            let detail = format!("{why}; the rest of the day is left for the next run");
            run.day_error("stage_unavailable", detail);
            stopped = true;
        }
        let log = std::mem::replace(&mut run.log, StatusLog::new(&connector.name, day));
        if stopped {
            return Ok(Err(log));
        }
        let listed = index.listed().await;
        let whole = log.nothing_to_retry();
        match index.finish(whole, run.is_redrive(), &log).await {
            Ok(collected) => {
                tracing::info!(connector = %connector.name, day = %day, copies = listed,
                    shards = collected.shards, whole, "day collected");
                Ok(Ok(collected))
            }
            Err(e) => {
                let mut log = log;
                log.errors.push(crate::report::DayError {
                    reason: "stage_unavailable".into(),
                    detail: format!(
                        "the day's index could not be written ({e}); nothing of it is \
                         delivered, and the next run collects the day again"
                    ),
                });
                Ok(Err(log))
            }
        }
    }
}

/// What a daemon's first look at a connector-day came to.
#[derive(Debug)]
pub enum DayTurn {
    /// The daemon held the day and ran it to its end: its status log.
    Ran(Box<StatusLog>),
    /// Another daemon holds the day: who, and until when.
    HeldElsewhere(String),
}

/// The outcome of one connector-day in a run.
#[derive(Debug)]
pub struct DayResult {
    pub connector: String,
    pub day: NaiveDate,
    pub log: Result<StatusLog>,
}

impl DayResult {
    /// The result, its failure logged: the day stays open for the next run.
    fn logged(connector: &Connector, day: NaiveDate, log: Result<StatusLog>) -> DayResult {
        if let Err(e) = &log {
            tracing::error!(connector = %connector.name, day = %day, error = %e,
                "the day could not be finished; it stays open for the next run");
        }
        DayResult {
            connector: connector.name.clone(),
            day,
            log,
        }
    }

    /// A day this run did not get to: the daemon was asked to stop first.
    fn not_reached(connector: &Connector, day: NaiveDate) -> DayResult {
        let mut log = StatusLog::new(&connector.name, day);
        log.errors.push(crate::report::DayError {
            reason: "interrupted".into(),
            detail: "shutdown requested before this run got to the day; the next run takes it"
                .into(),
        });
        log.finish(false);
        DayResult {
            connector: connector.name.clone(),
            day,
            log: Ok(log),
        }
    }

    /// Whether the day is finished (nothing left for a later run).
    pub fn is_complete(&self) -> bool {
        self.log.as_ref().is_ok_and(|l| l.complete)
    }
}
