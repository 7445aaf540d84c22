//! A group of shards delivered side by side: the shards a daemon takes, until their
//! mailboxes fill what it delivers at once, go through one loop that keeps each shard's
//! counts apart; the mailboxes with the most copies start first, and each mailbox's copies go
//! in order, as many at once (or per request) as its store takes, within the run's budget of
//! bytes in flight.

use super::tally::Tally;
use super::{Stopped, Unrecorded};
use crate::ledger::{DayLease, DaySession, Journal, Round, StagedCopy};
use crate::mailbox::DeliveryShape;
use crate::pipeline::copy::{self, DeliverContext, Delivered};
use crate::pipeline::{Archiver, Connector};
use crate::report::StatusLog;
use crate::Result;
use chrono::NaiveDate;
use futures::stream::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A shard this daemon leases and has started: its copies by mailbox.
pub(super) struct Taken {
    pub(super) shard: u32,
    lease: DayLease,
    /// Whether this daemon started the shard (no one delivered any of it before).
    first_taker: bool,
    pub(super) mailboxes: std::collections::BTreeMap<String, Vec<StagedCopy>>,
}

/// How delivering a group of shards ended: each shard's lease and counts, or why it
/// stopped, what it had delivered, and the leases to let go.
pub(super) enum GroupEnd {
    Done(Vec<(u32, DayLease, StatusLog)>),
    Stopped(Stopped, Vec<DayLease>),
}

impl Archiver {
    /// Mailboxes delivered at once: as many as the store takes side by side within
    /// `max_in_flight`, each with as many copies at once as the store takes for one mailbox.
    pub(super) fn mailboxes_at_once(&self) -> usize {
        let shape = self.mailbox.delivery_shape();
        (self.max_in_flight / shape.per_mailbox.max(1))
            .max(1)
            .min(shape.mailboxes.unwrap_or(usize::MAX))
    }

    /// Starts a shard whose lease this daemon holds: marks it started (or finds it started
    /// by a holder before: a takeover) and reads its copies, by mailbox.
    pub(super) async fn take_shard(
        &self,
        name: &str,
        day: NaiveDate,
        round: &Round,
        shard: u32,
        lease: DayLease,
    ) -> std::result::Result<Taken, (DayLease, crate::Error)> {
        let owner = crate::ledger::owner_id();
        let first_taker = match self
            .ledger
            .start_shard(name, day, round, shard, &owner)
            .await
        {
            Ok(first) => first,
            Err(e) => return Err((lease, e)),
        };
        let mailboxes = match self
            .ledger
            .shard_copies(name, day, &round.attempt, shard)
            .await
        {
            Ok(mailboxes) => mailboxes,
            Err(e) => return Err((lease, e)),
        };
        let copies: usize = mailboxes.values().map(Vec::len).sum();
        // Taken over: another daemon started the shard in this round. Recovering: some of
        // its copies may be in their mailboxes already (a takeover, or a later round after a
        // daemon stopped), so each is looked for before it is imported.
        tracing::info!(connector = name, day = %day, shard, mailboxes = mailboxes.len(), copies,
            taken_over = !first_taker, recovering = !round.first || !first_taker,
            "delivering shard");
        Ok(Taken {
            shard,
            lease,
            first_taker,
            mailboxes,
        })
    }

    /// Lets the leases of shards taken but not delivered go (their next taker finds them
    /// started, and looks for every copy).
    pub(super) async fn release_taken(&self, name: &str, day: NaiveDate, group: Vec<Taken>) {
        for taken in group {
            if let Err(e) = self.ledger.release(taken.lease).await {
                tracing::warn!(connector = name, day = %day, shard = taken.shard, error = %e,
                    "could not release the shard's lease; it expires on its own");
            }
        }
    }

    /// Delivers the shards taken: their copies grouped by mailbox, several mailboxes at once,
    /// each mailbox's copies as many at once as its store takes. Their leases (and those of
    /// shards delivered but not recorded yet) are renewed on the way; should any be lost, or
    /// the stage fail, or the daemon stop, none of the group is recorded as delivered.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn deliver_shards(
        &self,
        connector: &Connector,
        day: NaiveDate,
        round: &Round,
        group: Vec<Taken>,
        session: Option<&DaySession>,
        journal: &Arc<Journal>,
        unrecorded: &mut [Unrecorded],
    ) -> Result<GroupEnd> {
        let name = connector.name.as_str();
        let shape = self.mailbox.delivery_shape();
        let at_once = self.mailboxes_at_once();
        let mut contexts = Vec::with_capacity(group.len());
        let mut tallies = Vec::with_capacity(group.len());
        let mut leases = Vec::with_capacity(group.len());
        let mut waiting = Vec::new();
        for (i, taken) in group.into_iter().enumerate() {
            let recovering = !round.first || !taken.first_taker;
            contexts.push(Arc::new(
                self.deliver_context(connector, day, journal, recovering),
            ));
            tallies.push(Tally::new(name, day, round.redrive));
            leases.push((taken.shard, taken.lease));
            waiting.extend(taken.mailboxes.into_values().map(|copies| (i, copies)));
        }
        // The mailboxes with the most to import start first, so that the day does not wait
        // at its end for a large mailbox started late (behind the others, or behind the
        // budget they took).
        waiting.sort_by_cached_key(|(_, copies)| {
            let bytes: u64 = copies.iter().map(|c| c.bytes).sum();
            std::cmp::Reverse((copies.len(), bytes))
        });
        let stop = Arc::new(AtomicBool::new(false));
        // Their turns for room in the budget are in the same order.
        let mut waiting = (0u64..).zip(waiting);
        // Each mailbox's delivery is a task of its own, so that many mailboxes' requests are
        // made on every thread of the runtime; the set aborts them all if it is dropped.
        let mut running = tokio::task::JoinSet::new();
        let mut renew = tokio::time::interval(self.ledger.lease_renew_every());
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await;
        let mut stopped: Option<(&'static str, String)> = None;
        loop {
            while running.len() < at_once && !stop.load(Ordering::Relaxed) {
                let Some((turn, (i, copies))) = waiting.next() else {
                    break;
                };
                let (ctx, stop) = (contexts[i].clone(), stop.clone());
                let delivery =
                    async move { (i, deliver_mailbox(&ctx, copies, shape, turn, &stop).await) };
                // The day's incidents go with it.
                running.spawn(crate::incidents::within(
                    crate::incidents::current(),
                    delivery,
                ));
            }
            if running.is_empty() {
                break;
            }
            tokio::select! {
                Some(joined) = running.join_next() => {
                    let (i, results) = match joined {
                        Ok(delivered) => delivered,
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        // Cancelled: the runtime is shutting down. What the mailbox's task
                        // imported is in the journal or found in the mailbox next time.
                        Err(_) => {
                            stop.store(true, Ordering::Relaxed);
                            stopped.get_or_insert(("interrupted", "the daemon stopped before \
                                the day was delivered; the next run continues it".into()));
                            continue;
                        }
                    };
                    let tally = &mut tallies[i];
                    for result in results {
                        tally.delivered(result);
                    }
                    if let Some(why) = tally.stage_down.take() {
                        stop.store(true, Ordering::Relaxed);
                        let detail = format!("{why}; the rest of the day is left for the next run");
                        stopped.get_or_insert(("stage_unavailable", detail));
                    }
                }
                _ = renew.tick() => {
                    for waiting in unrecorded.iter_mut() {
                        let _ = self.ledger.renew(&mut waiting.lease).await;
                    }
                    let mut why = None;
                    for (shard, lease) in leases.iter_mut() {
                        why = match self.ledger.renew(lease).await {
                            Ok(true) => None,
                            Ok(false) => Some(("lease_lost", format!(
                                "another comms-archiver took over delivery shard {shard} of \
                                 the day; the rest of it is left to it"))),
                            Err(e) => Some(("stage_unavailable", format!(
                                "the lease of delivery shard {shard} could not be renewed \
                                 ({e}); the rest of the day is left for the next run"))),
                        };
                        if why.is_some() {
                            break;
                        }
                    }
                    if why.is_none() {
                        why = self.delivery_stop(session).await?.map(|s| (s.reason, s.detail));
                    }
                    if let Some(why) = why {
                        stop.store(true, Ordering::Relaxed);
                        stopped.get_or_insert(why);
                    }
                }
            }
        }
        if let Some((reason, detail)) = stopped {
            // What it imported is in the journal's next batch.
            let _ = journal.flush().await;
            let mut partial = StatusLog::new(name, day);
            for tally in tallies {
                partial.absorb(tally.log);
            }
            let leases = leases.into_iter().map(|(_, lease)| lease).collect();
            let stopped = Stopped {
                reason,
                detail,
                partial: Some(Box::new(partial)),
            };
            return Ok(GroupEnd::Stopped(stopped, leases));
        }
        let delivered = leases
            .into_iter()
            .zip(tallies)
            .map(|((shard, lease), tally)| (shard, lease, tally.log))
            .collect();
        Ok(GroupEnd::Done(delivered))
    }
}

/// Bytes in KiB (at least one), the unit a mailbox's batches are sized in.
fn kib(bytes: u64) -> usize {
    usize::try_from(bytes / 1024).unwrap_or(usize::MAX).max(1)
}

/// Delivers one mailbox's copies, started in order, up to `per_mailbox` at once (or, where the store
/// takes several in one request, `batch` copies per request), each within the process's
/// budget of bytes in flight, taking its room at the mailbox's `turn` once the store's pace
/// for the mailbox takes it; stops taking copies once `stop` is set.
async fn deliver_mailbox(
    ctx: &DeliverContext,
    copies: Vec<StagedCopy>,
    shape: DeliveryShape,
    turn: u64,
    stop: &AtomicBool,
) -> Vec<Delivered> {
    let whole = budget_size(ctx);
    // A batch takes at most an eighth of the budget, so that mailboxes share it.
    let batches = batches(copies, shape.batch, (whole / 8).max(1));
    let results: Vec<Vec<Delivered>> = futures::stream::iter(batches)
        .take_while(|_| std::future::ready(!stop.load(Ordering::Relaxed)))
        .map(|batch| async move {
            let bytes: u64 = batch.iter().map(|c| c.bytes).sum();
            // A mailbox its store paces waits for its pace first, holding no room meanwhile.
            let paced = ctx.mailbox.pace(&batch[0].mailbox, bytes).await;
            let _room = ctx.budget.take(bytes, turn).await;
            paced.within(copy::deliver(ctx, batch)).await
        })
        // Whichever ends first makes room for the next: a large copy holds one place only.
        .buffer_unordered(shape.per_mailbox.max(1))
        .collect()
        .await;
    results.into_iter().flatten().collect()
}

/// A mailbox's copies in order, in batches of at most `most` copies and (unless one copy is
/// larger) `kib_at_most` KiB.
fn batches(copies: Vec<StagedCopy>, most: usize, kib_at_most: usize) -> Vec<Vec<StagedCopy>> {
    let mut batches: Vec<Vec<StagedCopy>> = Vec::new();
    let mut size = 0;
    for copy in copies {
        let this = kib(copy.bytes);
        match batches.last_mut() {
            Some(last) if last.len() < most.max(1) && size + this <= kib_at_most => {
                size += this;
                last.push(copy);
            }
            _ => {
                size = this;
                batches.push(vec![copy]);
            }
        }
    }
    batches
}

fn budget_size(ctx: &DeliverContext) -> usize {
    kib(ctx.budget.whole())
}
