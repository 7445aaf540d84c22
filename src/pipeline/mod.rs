//! One connector-day, end to end: pull, map, render, gate on size, stage, import, record.
//!
//! Records stream from the source one at a time (read ahead by one); up to `max_in_flight`
//! copies are staged and imported at once, so memory stays bounded by a few messages however
//! large the day. [`day`] turns records into copy jobs and copy results into the status log;
//! [`copy`] stages, imports and records one copy.

mod config;
mod copy;
mod day;
mod oversize;
mod redrive;

pub use config::{
    ArchiverConfig, Oversize, DEFAULT_MAX_IN_FLIGHT_BYTES, DEFAULT_MAX_ITEM_BYTES,
    DEFAULT_MAX_ORIGINAL_BYTES,
};
pub use redrive::Redrive;

use crate::ledger::{DaySession, Ledger, Opened, Place};
use crate::mailbox::Mailbox;
use crate::mapping::Mapper;
use crate::report::{DayError, StatusLog};
use crate::sources::Partner;
use crate::sources::{ItemStream, Pulled, Source};
use crate::stage::Stage;
use crate::Result;
use chrono::NaiveDate;
use copy::CopyContext;
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
        self.ledger = Ledger::new(stage.clone());
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
        self.mailbox.close_idle().await;
        results
    }

    /// Why the day must stop taking records now, if it must: the lease was lost, the stage
    /// is down, or a shutdown was asked for. Renews the lease when it is due.
    async fn stop_reason(
        &self,
        run: &mut DayRun<'_>,
        session: &DaySession,
    ) -> Result<Option<(&'static str, String)>> {
        if !session.keep().await? {
            let detail = "another comms-archiver took over this day's lease; the rest of the \
                          day is left to it";
            return Ok(Some(("lease_lost", detail.into())));
        }
        if let Some(why) = run.stage_down.take() {
            let detail = format!("{why}; the rest of the day is left for the next run");
            return Ok(Some(("stage_unavailable", detail)));
        }
        if self.is_shutting_down() {
            let detail =
                "shutdown requested before the day was finished; the next run continues it";
            return Ok(Some(("interrupted", detail.into())));
        }
        Ok(None)
    }

    /// Processes one connector-day and writes its status log. The day is checkpointed only
    /// when nothing in it is left to retry.
    pub async fn run_day(&self, connector: &Connector, day: NaiveDate) -> Result<StatusLog> {
        let started = std::time::Instant::now();
        let session = match self.ledger.open_day(&connector.name, day).await? {
            Opened::Session(session) => session,
            Opened::Busy(busy) => {
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
        let incidents = crate::incidents::Recorder::default();
        let run = crate::incidents::within(
            Some(incidents.clone()),
            self.take_records(connector, &session),
        )
        .await;
        let mut log = match run {
            Ok(log) => log,
            Err(e) => {
                session.abandon().await;
                return Err(e);
            }
        };
        log.incidents = incidents.list();
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

    /// Pulls the day's records and delivers their copies until the records end or the day
    /// must stop; the status log so far, to finish.
    async fn take_records(&self, connector: &Connector, session: &DaySession) -> Result<StatusLog> {
        let day = session.day();
        tracing::info!(connector = %connector.name, day = %day, recovering = session.recovering(),
            source = %connector.source.describe(), "starting day");
        let run = DayRun::new(self, connector, day);
        let records = connector.source.open(day).await;
        self.work_through(run, session, records).await
    }

    /// Takes records from `records` and does their work, at most `max_in_flight` pieces
    /// and `max_in_flight_bytes` at once, until the records end or the day must stop.
    async fn work_through(
        &self,
        mut run: DayRun<'_>,
        session: &DaySession,
        records: std::result::Result<Box<dyn ItemStream>, crate::sources::SourceError>,
    ) -> Result<StatusLog> {
        let (connector, day) = (run.connector, run.day);
        let ctx = CopyContext {
            archiver: self,
            connector,
            day,
            recovering: session.recovering(),
            check_every_copy: session.earlier() == crate::ledger::Earlier::BeforeJournal,
            journal: session.journal(),
            destination: self.mailbox.destination(),
        };
        match records {
            Err(e) => run.day_error(e.reason(), e.to_string()),
            Ok(stream) => {
                // The source reads ahead by one record in its own task: a channel receive can
                // be interrupted safely, a partner stream in the middle of a page cannot.
                let (records, mut pulled) = mpsc::channel(1);
                let mut reader = tokio::spawn(crate::incidents::within(
                    crate::incidents::current(),
                    read_source(stream, records),
                ));
                let mut copies = FuturesUnordered::new();
                let mut bytes_in_flight = 0u64;
                let mut taking = true;
                while taking || !copies.is_empty() {
                    if taking {
                        if let Some((reason, detail)) = self.stop_reason(&mut run, session).await? {
                            run.day_error(reason, detail);
                            taking = false;
                            continue;
                        }
                    }
                    tokio::select! {
                        Some((bytes, result)) = copies.next(), if !copies.is_empty() => {
                            bytes_in_flight -= bytes;
                            run.apply(result);
                        }
                        record = pulled.recv(), if taking
                            && copies.len() < self.max_in_flight
                            && bytes_in_flight < self.max_in_flight_bytes => match record {
                            Some(Ok(Some(record))) => {
                                for work in run.pulled(record) {
                                    let bytes = work.bytes();
                                    bytes_in_flight += bytes;
                                    let ctx = &ctx;
                                    copies.push(async move { (bytes, copy::perform(ctx, work).await) });
                                }
                            }
                            Some(Ok(None)) => taking = false,
                            // The reader is gone without saying the day ended: whatever it
                            // had not read yet is still at the partner, so the day stays open.
                            None => {
                                let detail = reader_died(&mut reader).await;
                                tracing::error!(connector = %connector.name, day = %day,
                                    error = %detail, "the partner records stopped before their end");
                                run.day_error("source_reader_died", detail);
                                taking = false;
                            }
                            Some(Err(e)) => {
                                run.day_error(e.reason(), e.to_string());
                                taking = false;
                            }
                        },
                    }
                }
                reader.abort();
            }
        }
        Ok(std::mem::replace(
            &mut run.log,
            StatusLog::new(&connector.name, day),
        ))
    }
}

/// Reads a day's records into a channel until the end, an error, or the day stops listening.
async fn read_source(
    mut stream: Box<dyn ItemStream>,
    records: mpsc::Sender<std::result::Result<Option<Pulled>, crate::sources::SourceError>>,
) {
    loop {
        let record = stream.next().await;
        let last = !matches!(record, Ok(Some(_)));
        if records.send(record).await.is_err() || last {
            return;
        }
    }
}

/// Why the task reading the partner's records ended without its last message: its panic's
/// message, or that it was stopped.
async fn reader_died(reader: &mut tokio::task::JoinHandle<()>) -> String {
    let why = match reader.await {
        Ok(()) => "it ended without reporting the end of the records".to_string(),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string());
            format!("it panicked: {message}")
        }
        Err(e) => format!("it was stopped: {e}"),
    };
    format!(
        "reading the partner's records failed ({why}); the records after that point were not \
         read, and the next run reads the day again"
    )
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
