//! Delivering a collected day: shard by shard, each shard's copies grouped by mailbox, so
//! that a mailbox's copies go in together (one IMAP login for all of them; through Graph,
//! four at once for each of many mailboxes) rather than in the partner's order.
//!
//! Every shard is taken under a lease of its own, so daemons sharing a stage share the day:
//! the day's holder collects, then it and every daemon that finds the day busy take shards
//! until none is left. A shard whose holder stops renewing its lease is taken over; the new
//! holder finds the shard started already and looks for every copy before importing it.
//! What delivering a shard did is recorded with it once its import records are written,
//! and the day's holder adds the shards up into the day's status log.

mod group;
mod tally;

use super::{Archiver, Connector};
use crate::ledger::{Collected, DayLease, DaySession, Journal, Opened, Round};
use crate::report::StatusLog;
use crate::Result;
use chrono::NaiveDate;
use group::{GroupEnd, Taken};
use std::sync::Arc;
use std::time::Duration;

/// How long a daemon waits before looking again at shards others hold.
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// Why this daemon stopped delivering a round before its end.
pub(super) struct Stopped {
    pub reason: &'static str,
    pub detail: String,
    /// What it had delivered of the shard it was on.
    pub partial: Option<Box<StatusLog>>,
}

/// How far this daemon took a round.
pub(super) enum RoundEnd {
    /// Every shard of the round is delivered (by this daemon or others).
    Delivered,
    /// The shards left are others' (only without the day's session).
    LeftToOthers,
    Stopped(Stopped),
}

/// What this daemon delivered of a round: the shards and their counts.
pub(super) struct Share {
    pub log: StatusLog,
    pub shards: usize,
}

/// A shard delivered whose import records the journal has not all written yet: its lease
/// is kept until they are, and what it did is recorded then.
pub(super) struct Unrecorded {
    shard: u32,
    lease: DayLease,
    log: StatusLog,
}

impl Archiver {
    /// A day another daemon holds: delivers shards of its collection while the holder works
    /// on it, and finishes the day if the holder stops before its end with its collection
    /// whole, or runs it whole if the holder died with it (its lease taken over, not let
    /// go). The log says the day was busy (the holder's run writes the day's log), and what
    /// this daemon delivered of it.
    pub async fn help_with_day(
        &self,
        connector: &Connector,
        day: NaiveDate,
        busy: String,
    ) -> Result<StatusLog> {
        let name = connector.name.as_str();
        let journal = Arc::new(self.ledger.journal(name));
        let mut helped = Share {
            log: StatusLog::new(name, day),
            shards: 0,
        };
        loop {
            if self.is_shutting_down() {
                break;
            }
            let newest = self.ledger.newest_collection(name, day).await?;
            let round = self.ledger.current_round(name, day).await?;
            if let (Some(collected), Some(round)) = (&newest, &round) {
                if collected.attempt == round.attempt {
                    let end = self
                        .deliver_round(connector, day, round, None, &journal, &mut helped)
                        .await?;
                    match end {
                        RoundEnd::Stopped(stopped) => {
                            tracing::warn!(connector = name, day = %day, reason = stopped.reason,
                                detail = %stopped.detail, "stopped delivering the shared day");
                            if let Some(partial) = stopped.partial {
                                helped.log.absorb(*partial);
                            }
                            break;
                        }
                        RoundEnd::Delivered | RoundEnd::LeftToOthers => {}
                    }
                }
            }
            if self.ledger.is_complete(name, day).await? {
                break;
            }
            // Nothing to take now: the holder is collecting, or adding the shards up, or
            // gone. A day left with its collection whole is finished here.
            match self.ledger.open_day(name, day).await? {
                Opened::Busy(_) => tokio::time::sleep(LOOK_AGAIN * 2).await,
                Opened::Session(session) => {
                    if self.resumable_collection(name, day).await?.is_some() {
                        tracing::warn!(connector = name, day = %day,
                            "the daemon that held the day stopped before its end; finishing it here");
                        return self.run_session(connector, *session).await;
                    }
                    // Its holder went silent (it ends no run of the day, so no "next run"
                    // of its would take the day): the day is run here.
                    if session.taken_from().is_some() {
                        tracing::warn!(connector = name, day = %day,
                            "the daemon that held the day stopped renewing its lease; running the day here");
                        return self.run_session(connector, *session).await;
                    }
                    session.abandon().await;
                    break;
                }
            }
        }
        tracing::info!(connector = name, day = %day, %busy, shards = helped.shards,
            imported = helped.log.imported, "helped with a day another daemon holds");
        // Finished by its holder: the day as a whole is this run's answer too.
        if self.ledger.is_complete(name, day).await? {
            if let Some(mut whole) = self.ledger.reconcile(name, day).await? {
                whole.summary = Some(match helped.shards {
                    0 => "delivered by another comms-archiver; this one delivered none of it"
                        .to_string(),
                    shards => format!(
                        "delivered by more than one comms-archiver; this one delivered {shards} \
                         of its shards ({} copies imported)",
                        helped.log.imported
                    ),
                });
                return Ok(whole);
            }
        }
        let mut log = helped.log;
        log.errors.push(crate::report::DayError {
            reason: "busy".into(),
            detail: format!(
                "{busy}; this daemon delivered {} of its shards ({} copies imported)",
                helped.shards, log.imported
            ),
        });
        log.finish(false);
        Ok(log)
    }

    /// Delivers a collection: a new round over its shards not yet delivered, then the day's
    /// log as collecting left it with every shard's counts added.
    pub(super) async fn deliver_collection(
        &self,
        connector: &Connector,
        session: &DaySession,
        collected: Collected,
    ) -> Result<StatusLog> {
        let (name, day) = (connector.name.as_str(), session.day());
        let mut log = collected.log.clone();
        // A stage that fails under the delivery's own records stops the day as it stops a
        // copy: the day stays open and says why.
        let stage_down = |e: crate::Error| {
            RoundEnd::Stopped(Stopped {
                reason: "stage_unavailable",
                detail: format!("{e}; the rest of the day is left for the next run"),
                partial: None,
            })
        };
        let round = match self
            .ledger
            .start_round(name, day, &collected, session.journal().run_id())
            .await
        {
            Ok(round) => round,
            Err(e) => {
                log.errors.push(crate::report::DayError {
                    reason: "stage_unavailable".into(),
                    detail: format!("{e}; the day is left for the next run"),
                });
                return Ok(log);
            }
        };
        tracing::info!(connector = name, day = %day, shards = round.shards.len(),
            of = round.of, first = round.first, "delivering the day's copies by mailbox");
        let mut mine = Share {
            log: StatusLog::new(name, day),
            shards: 0,
        };
        let end = self
            .deliver_round(
                connector,
                day,
                &round,
                Some(session),
                session.journal(),
                &mut mine,
            )
            .await
            .unwrap_or_else(stage_down);
        if let RoundEnd::Stopped(stopped) = end {
            tracing::error!(connector = name, day = %day, reason = stopped.reason,
                detail = %stopped.detail, "the day stays open");
            if let Some(partial) = stopped.partial {
                log.absorb(*partial);
            }
            log.errors.push(crate::report::DayError {
                reason: stopped.reason.into(),
                detail: stopped.detail,
            });
        }
        let mut done = self.ledger.round_done(name, day, &round).await?;
        let mut earlier = self
            .ledger
            .settled_shards(name, day, &round.attempt)
            .await?;
        let mut missing = 0;
        for shard in 0..round.of {
            let delivered = match round.shards.contains(&shard) {
                true => done.remove(&shard),
                false => earlier.remove(&shard),
            };
            match delivered {
                Some(shard_log) => log.absorb(shard_log),
                None => missing += 1,
            }
        }
        if missing > 0 && log.errors.is_empty() {
            log.errors.push(crate::report::DayError {
                reason: "undelivered".into(),
                detail: format!(
                    "{missing} of the day's {} delivery shards were not delivered; the next \
                     run delivers them",
                    round.of
                ),
            });
        }
        Ok(log)
    }

    /// Takes shards of `round` and delivers them until none is left to take, adding what
    /// each did to `mine`. The day's holder (`session`) also waits for the shards others
    /// hold, taking over any whose holder stops renewing its lease; any other daemon leaves
    /// those to their holders.
    pub(super) async fn deliver_round(
        &self,
        connector: &Connector,
        day: NaiveDate,
        round: &Round,
        session: Option<&DaySession>,
        journal: &Arc<Journal>,
        mine: &mut Share,
    ) -> Result<RoundEnd> {
        let mut unrecorded = Vec::new();
        let end = self
            .take_shards(
                connector,
                day,
                round,
                session,
                journal,
                mine,
                &mut unrecorded,
            )
            .await;
        let recorded = self
            .record_shards(&connector.name, day, round, journal, &mut unrecorded)
            .await;
        match (end?, recorded) {
            (RoundEnd::Stopped(stopped), _) => Ok(RoundEnd::Stopped(stopped)),
            (_, Err(stopped)) => Ok(RoundEnd::Stopped(stopped)),
            (end, Ok(())) => Ok(end),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn take_shards(
        &self,
        connector: &Connector,
        day: NaiveDate,
        round: &Round,
        session: Option<&DaySession>,
        journal: &Arc<Journal>,
        mine: &mut Share,
        unrecorded: &mut Vec<Unrecorded>,
    ) -> Result<RoundEnd> {
        let name = connector.name.as_str();
        let owner = crate::ledger::owner_id();
        // Daemons start at different shards, so that they seldom contend for one.
        let start = crate::ledger::shard_of(&owner, round.shards.len().max(1) as u32) as usize;
        let mut order = round.shards.clone();
        let turn = start.min(order.len());
        order.rotate_left(turn);
        loop {
            let done = self.ledger.round_done(name, day, round).await?;
            let pending: Vec<u32> = order
                .iter()
                .copied()
                .filter(|s| !done.contains_key(s) && !unrecorded.iter().any(|u| u.shard == *s))
                .collect();
            if pending.is_empty() {
                return Ok(RoundEnd::Delivered);
            }
            // Shards are taken until their mailboxes fill what the daemon delivers at once:
            // with few mailboxes per shard, several shards go side by side.
            let at_once = self.mailboxes_at_once();
            let mut group: Vec<Taken> = Vec::new();
            let mut mailboxes = 0;
            for shard in pending {
                if mailboxes >= at_once {
                    break;
                }
                if let Some(stopped) = self.delivery_stop(session).await? {
                    self.release_taken(name, day, group).await;
                    return Ok(RoundEnd::Stopped(stopped));
                }
                let lease = match self.ledger.acquire_shard(name, day, shard, &owner).await? {
                    Ok(lease) => lease,
                    Err(_held) => continue,
                };
                // Delivered meanwhile by the daemon that held it.
                if self.ledger.shard_is_done(name, day, round, shard).await? {
                    let _ = self.ledger.release(lease).await;
                    continue;
                }
                // A later round (this day's holder stopped, another took the day over)
                // lists the shards undelivered when it began; a daemon still on the earlier
                // round may have finished one since. What it did is the shard's record in
                // this round too: its copies are not looked for again, nor counted twice.
                if !round.first {
                    if let Some(log) = self.ledger.settled_before(name, day, round, shard).await? {
                        tracing::info!(connector = name, day = %day, shard,
                            "shard delivered in an earlier round since this one began");
                        self.ledger
                            .finish_shard(name, day, round, shard, &log)
                            .await?;
                        let _ = self.ledger.release(lease).await;
                        continue;
                    }
                }
                let taken = self.take_shard(name, day, round, shard, lease).await;
                match taken {
                    Ok(taken) => {
                        mailboxes += taken.mailboxes.len();
                        group.push(taken);
                    }
                    Err((lease, e)) => {
                        let _ = self.ledger.release(lease).await;
                        self.release_taken(name, day, group).await;
                        return Err(e);
                    }
                }
            }
            let took = !group.is_empty();
            if took {
                let shards: Vec<u32> = group.iter().map(|t| t.shard).collect();
                let end = self
                    .deliver_shards(connector, day, round, group, session, journal, unrecorded)
                    .await?;
                match end {
                    GroupEnd::Done(delivered) => {
                        for (shard, lease, log) in delivered {
                            mine.shards += 1;
                            mine.log.absorb(log.clone());
                            unrecorded.push(Unrecorded { shard, lease, log });
                        }
                        // Recorded as soon as the journal has written their copies' records
                        // (it writes in batches, not after every shard).
                        if journal.is_flushed().await {
                            if let Err(stopped) = self
                                .record_shards(name, day, round, journal, unrecorded)
                                .await
                            {
                                return Ok(RoundEnd::Stopped(stopped));
                            }
                        }
                    }
                    GroupEnd::Stopped(stopped, leases) => {
                        for lease in leases {
                            if let Err(e) = self.ledger.release(lease).await {
                                tracing::warn!(connector = name, day = %day, ?shards, error = %e,
                                    "could not release a shard's lease; it expires on its own");
                            }
                        }
                        return Ok(RoundEnd::Stopped(stopped));
                    }
                }
            }
            if !took {
                if session.is_none() {
                    return Ok(RoundEnd::LeftToOthers);
                }
                // Waiting for others: what this daemon delivered is recorded first.
                if let Err(stopped) = self
                    .record_shards(name, day, round, journal, unrecorded)
                    .await
                {
                    return Ok(RoundEnd::Stopped(stopped));
                }
                tokio::time::sleep(LOOK_AGAIN).await;
            }
        }
    }

    /// Writes the journal's pending records, then what each delivered shard did, and lets
    /// the shards' leases go. When the journal cannot be written the shards stay unrecorded
    /// (their leases expire) and the next round delivers them again, looking for every copy.
    async fn record_shards(
        &self,
        name: &str,
        day: NaiveDate,
        round: &Round,
        journal: &Journal,
        unrecorded: &mut Vec<Unrecorded>,
    ) -> std::result::Result<(), Stopped> {
        if unrecorded.is_empty() {
            return Ok(());
        }
        let stage_down = |detail: String| Stopped {
            reason: "stage_unavailable",
            detail,
            partial: None,
        };
        journal.flush().await.map_err(|e| {
            stage_down(format!(
                "the ledger could not record imported copies ({e}); the next run checks the \
                 mailbox before importing them again"
            ))
        })?;
        for done in unrecorded.drain(..) {
            if let Err(e) = self
                .ledger
                .finish_shard(name, day, round, done.shard, &done.log)
                .await
            {
                return Err(stage_down(format!(
                    "delivery shard {} could not be recorded as delivered ({e}); the next run \
                     delivers it again, looking for every copy first",
                    done.shard
                )));
            }
            tracing::info!(connector = name, day = %day, shard = done.shard,
                imported = done.log.imported, skipped = done.log.skipped_duplicates,
                failed = done.log.failed, held = done.log.held, "shard delivered");
            if let Err(e) = self.ledger.release(done.lease).await {
                tracing::warn!(connector = name, day = %day, shard = done.shard, error = %e,
                    "could not release the shard's lease; it expires on its own");
            }
        }
        Ok(())
    }

    /// Why delivery must stop now, if it must: a shutdown, or the day's lease lost.
    pub(super) async fn delivery_stop(
        &self,
        session: Option<&DaySession>,
    ) -> Result<Option<Stopped>> {
        if let Some(session) = session {
            if !session.keep().await? {
                return Ok(Some(Stopped {
                    reason: "lease_lost",
                    detail: "another comms-archiver took over this day's lease; the rest of \
                             the day is left to it"
                        .into(),
                    partial: None,
                }));
            }
        }
        if self.is_shutting_down() {
            return Ok(Some(Stopped {
                reason: "interrupted",
                detail: "shutdown requested before the day was finished; the next run \
                         continues it"
                    .into(),
                partial: None,
            }));
        }
        Ok(None)
    }
}
