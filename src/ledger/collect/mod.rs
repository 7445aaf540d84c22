//! The day between its two phases. Collecting stages every copy (create-only, as always) and
//! lists it in the day's index, in batches per mailbox shard; delivering takes the index
//! shard by shard, each shard's copies grouped by mailbox, under a lease of its own so that
//! several daemons can share one day.
//!
//! Keys in the stage (state, not evidence: the evidence is the staged copy and its import
//! record), under `ledger/<connector>/collect/<day>/`:
//! - `<attempt>/index/<shard>/<n>.jsonl`: the copies one collection staged, one JSON line
//!   each, in batches of [`INDEX_BATCH`] per shard (create-only);
//! - `<attempt>/collected.json`: written once the collection ended and its batches are
//!   written: how many shards, whether it read the whole delivery, and the status log of
//!   what it did ([`Collected`]);
//! - `round.json`: the delivery round under way ([`Round`]): which collection, which shards;
//! - `<attempt>/rounds/<round>/started/<shard>`: a shard was taken in that round (create-only:
//!   whoever finds it there already takes over from someone, and checks every copy);
//! - `<attempt>/rounds/<round>/done/<shard>.json`: what delivering the shard did, as a status
//!   log of its copies, written after their import records.
//!
//! Shard leases are `ledger/<connector>/leases/<day>/shard-<n>.json`, taken, renewed and
//! released like the day's lease. A mailbox always falls in the same shard of a day (the
//! first collection of the day fixes how many there are), so no two deliveries of one
//! mailbox's copies ever run at once, whichever collection or round they belong to.

use super::{DayLease, Ledger};
use crate::mapping::Via;
use crate::report::{LeftOut, StatusLog};
use crate::stage::Created;
use crate::{Error, Result};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Copies an index batch holds at most; a shard's batch is written when it is full.
pub const INDEX_BATCH: usize = 256;

/// One staged copy, as the day's index lists it for delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedCopy {
    pub item_id: String,
    pub item_key: String,
    /// The item's own time: the message's date in the mailbox, and the date its staged
    /// message and import record are kept under.
    pub time: DateTime<Utc>,
    pub mailbox: String,
    pub via: Via,
    /// How the mailbox was found, in words, for the import record.
    pub mapped_by: String,
    /// The archived employee, for failure reports.
    pub user: String,
    /// The stage key of the rendered message.
    pub staged: String,
    /// The staged message's length: what delivery reads, and takes its room in the budget
    /// for (a message staged before is listed at its own length, not this run's rendering's).
    pub bytes: u64,
    /// The SHA-256 of the staged message, when this collection staged it (a message staged
    /// before is whatever that run rendered): delivery imports only those bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<LeftOut>,
    /// The collection created the staged message: no run can have imported it before.
    pub fresh: bool,
}

/// What a collection left for delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Collected {
    pub attempt: String,
    pub shards: u32,
    /// The collection read the whole delivery and left nothing to retry: a later run of an
    /// unfinished day delivers it rather than reading the partner again.
    pub whole: bool,
    /// A re-drive of held copies rather than the day's delivery.
    pub redrive: bool,
    /// What collecting did: every count but the delivered copies'.
    pub log: StatusLog,
    pub collected_at: DateTime<Utc>,
    /// How many of the day's collections had their markers when this one was marked: its
    /// place among them, whatever the clocks of the hosts that made them say (the day's
    /// lease lets one run at a time collect). Absent in markers written before it was
    /// recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marked_after: Option<u32>,
    /// The runs of the day that had ended (written their run logs) when it was marked.
    /// Absent in markers written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs_ended: Option<Vec<String>>,
}

impl Collected {
    /// Whether the run of `log` ended after this collection was marked. Markers of earlier
    /// versions are compared by time.
    pub fn ended_after(&self, log: &StatusLog) -> bool {
        match (&self.runs_ended, &log.run) {
            (Some(ended), Some(run)) => !ended.contains(&run.id),
            _ => log.completed_at >= self.collected_at,
        }
    }
}

/// One delivery round of a collection: the shards it delivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round {
    pub attempt: String,
    pub round: String,
    /// The collection's shard count.
    pub of: u32,
    pub shards: Vec<u32>,
    /// The collection's first round: a fresh copy in a shard nobody took before in it is
    /// imported without asking the mailbox first.
    pub first: bool,
    /// A re-drive's round: its status log lists where each held copy went.
    #[serde(default)]
    pub redrive: bool,
}

/// The mailbox shard a mailbox's copies fall into, out of `shards`.
pub fn shard_of(mailbox: &str, shards: u32) -> u32 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(mailbox.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % shards.max(1)
}

fn prefix(connector: &str, day: NaiveDate) -> String {
    format!("ledger/{connector}/collect/{day}/")
}

fn shard_lease_key(connector: &str, day: NaiveDate, shard: u32) -> String {
    format!("ledger/{connector}/leases/{day}/shard-{shard:04}.json")
}

fn done_key(connector: &str, day: NaiveDate, round: &Round, shard: u32) -> String {
    format!(
        "{}{}/rounds/{}/done/{shard:04}.json",
        prefix(connector, day),
        round.attempt,
        round.round
    )
}

/// The day's index as one collection writes it: a pending batch per shard.
pub struct CollectIndex {
    ledger: Ledger,
    connector: String,
    day: NaiveDate,
    attempt: String,
    shards: u32,
    state: tokio::sync::Mutex<IndexState>,
}

#[derive(Default)]
struct IndexState {
    pending: HashMap<u32, Vec<StagedCopy>>,
    written: HashMap<u32, u32>,
    listed: u64,
}

impl CollectIndex {
    pub fn attempt(&self) -> &str {
        &self.attempt
    }

    /// Lists a staged copy; writes its shard's batch when it is full. A batch that cannot be
    /// written stays pending, and the error is the copy's.
    pub async fn add(&self, copy: StagedCopy) -> Result<()> {
        let shard = shard_of(&copy.mailbox, self.shards);
        let batch = {
            let mut state = self.state.lock().await;
            state.listed += 1;
            let pending = state.pending.entry(shard).or_default();
            pending.push(copy);
            if pending.len() < INDEX_BATCH {
                return Ok(());
            }
            std::mem::take(pending)
        };
        self.write_batch(shard, batch).await
    }

    async fn write_batch(&self, shard: u32, batch: Vec<StagedCopy>) -> Result<()> {
        let n = {
            let mut state = self.state.lock().await;
            let n = state.written.entry(shard).or_default();
            *n += 1;
            *n
        };
        let mut lines = Vec::with_capacity(batch.len() * 400);
        for copy in &batch {
            serde_json::to_writer(&mut lines, copy).expect("a staged copy serializes");
            lines.push(b'\n');
        }
        let key = format!(
            "{}{}/index/{shard:04}/{n:06}.jsonl",
            prefix(&self.connector, self.day),
            self.attempt
        );
        match self.ledger.stage.put_new(&key, &lines).await {
            Ok(Created::New) => Ok(()),
            Ok(Created::AlreadyExists) => Err(Error::State(format!(
                "the index batch {key} exists already: two collections share the id {}",
                self.attempt
            ))),
            Err(e) => {
                // Kept for the next try: the copies are staged, and must be listed.
                self.state
                    .lock()
                    .await
                    .pending
                    .entry(shard)
                    .or_default()
                    .extend(batch);
                Err(e.into())
            }
        }
    }

    /// Writes every pending batch, then the collection's marker: from then on its shards
    /// can be delivered. Nothing of a collection without a marker is ever delivered; the
    /// day's next run collects again.
    pub async fn finish(&self, whole: bool, redrive: bool, log: &StatusLog) -> Result<Collected> {
        let pending: Vec<(u32, Vec<StagedCopy>)> = {
            let mut state = self.state.lock().await;
            let mut pending: Vec<_> = state.pending.drain().collect();
            pending.sort_by_key(|(shard, _)| *shard);
            pending
        };
        for (shard, batch) in pending {
            if !batch.is_empty() {
                self.write_batch(shard, batch).await?;
            }
        }
        let (connector, day) = (self.connector.as_str(), self.day);
        let marked_before = self.ledger.collection_markers(connector, day).await?.len();
        let collected = Collected {
            attempt: self.attempt.clone(),
            shards: self.shards,
            whole,
            redrive,
            log: log.clone(),
            collected_at: Utc::now(),
            marked_after: Some(marked_before as u32),
            runs_ended: Some(self.ledger.logged_runs(connector, day).await?),
        };
        let key = format!(
            "{}{}/collected.json",
            prefix(&self.connector, self.day),
            self.attempt
        );
        let bytes = serde_json::to_vec(&collected).expect("a collection serializes");
        self.ledger.stage.put_new(&key, &bytes).await?;
        Ok(collected)
    }

    /// Copies listed so far.
    pub async fn listed(&self) -> u64 {
        self.state.lock().await.listed
    }
}

impl Ledger {
    /// An index for a new collection of `day`, named `attempt`. The day keeps the shard count
    /// its first collection had; a first collection takes `shards`.
    pub async fn collect_index(
        &self,
        connector: &str,
        day: NaiveDate,
        attempt: &str,
        shards: u32,
    ) -> Result<CollectIndex> {
        let shards = match self.newest_collection(connector, day).await? {
            Some(earlier) => earlier.shards,
            None => shards.max(1),
        };
        Ok(CollectIndex {
            ledger: self.clone(),
            connector: connector.to_string(),
            day,
            attempt: attempt.to_string(),
            shards,
            state: Default::default(),
        })
    }

    /// The keys of the day's collection markers, in the order of their names.
    async fn collection_markers(&self, connector: &str, day: NaiveDate) -> Result<Vec<String>> {
        let mut markers: Vec<String> = self
            .stage
            .list(&prefix(connector, day))
            .await?
            .into_iter()
            .filter(|k| k.ends_with("/collected.json"))
            .collect();
        markers.sort();
        Ok(markers)
    }

    /// The day's newest collection with a marker, if any: the one marked after the most
    /// others. Markers of earlier versions come before those that say, in the order of
    /// their names (which begin with their hosts' times).
    pub async fn newest_collection(
        &self,
        connector: &str,
        day: NaiveDate,
    ) -> Result<Option<Collected>> {
        let markers = self.collection_markers(connector, day).await?;
        if markers.len() <= 1 {
            return match markers.first() {
                Some(key) => self.read(key).await,
                None => Ok(None),
            };
        }
        let mut newest: Option<((u32, usize), Collected)> = None;
        for (at, key) in markers.iter().enumerate() {
            let Some(collected) = self.read::<Collected>(key).await? else {
                continue;
            };
            let place = (collected.marked_after.map_or(0, |n| n + 1), at);
            if newest.as_ref().is_none_or(|(best, _)| place > *best) {
                newest = Some((place, collected));
            }
        }
        Ok(newest.map(|(_, collected)| collected))
    }

    /// The copies of one shard of a collection, each once, grouped by mailbox and in the
    /// order of their items' times.
    pub async fn shard_copies(
        &self,
        connector: &str,
        day: NaiveDate,
        attempt: &str,
        shard: u32,
    ) -> Result<BTreeMap<String, Vec<StagedCopy>>> {
        let at = format!("{}{attempt}/index/{shard:04}/", prefix(connector, day));
        let mut batches = self.stage.list(&at).await?;
        batches.sort();
        let mut by_mailbox: BTreeMap<String, BTreeMap<String, StagedCopy>> = BTreeMap::new();
        for batch in batches {
            let bytes = self.stage.get(&batch).await?.unwrap_or_default();
            let unreadable = |line: usize, why: String| {
                Error::State(format!(
                    "{} holds an unreadable index batch '{batch}' (line {line}: {why}); remove \
                     {}{attempt}/collected.json and the day's next run collects it again",
                    self.stage.describe(),
                    prefix(connector, day)
                ))
            };
            let text = std::str::from_utf8(&bytes).map_err(|e| unreadable(1, e.to_string()))?;
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
                let copy: StagedCopy =
                    serde_json::from_str(line).map_err(|e| unreadable(i + 1, e.to_string()))?;
                let copies = by_mailbox.entry(copy.mailbox.clone()).or_default();
                match copies.get_mut(&copy.item_key) {
                    // Listed twice: a copy is fresh only if every listing says so.
                    Some(seen) => seen.fresh &= copy.fresh,
                    None => {
                        copies.insert(copy.item_key.clone(), copy);
                    }
                }
            }
        }
        Ok(by_mailbox
            .into_iter()
            .map(|(mailbox, copies)| {
                let mut copies: Vec<StagedCopy> = copies.into_values().collect();
                copies.sort_by(|a, b| (a.time, &a.item_key).cmp(&(b.time, &b.item_key)));
                (mailbox, copies)
            })
            .collect())
    }

    /// Starts a delivery round of `collected`: every shard of it that no earlier round
    /// delivered with nothing left to retry.
    pub async fn start_round(
        &self,
        connector: &str,
        day: NaiveDate,
        collected: &Collected,
        round: &str,
    ) -> Result<Round> {
        let settled = self
            .settled_shards(connector, day, &collected.attempt)
            .await?;
        let first = !self
            .stage
            .list(&format!(
                "{}{}/rounds/",
                prefix(connector, day),
                collected.attempt
            ))
            .await?
            .iter()
            .any(|k| k.contains("/started/"));
        let round = Round {
            attempt: collected.attempt.clone(),
            round: round.to_string(),
            of: collected.shards,
            shards: (0..collected.shards)
                .filter(|s| !settled.contains_key(s))
                .collect(),
            first,
            redrive: collected.redrive,
        };
        self.write(&format!("{}round.json", prefix(connector, day)), &round)
            .await?;
        Ok(round)
    }

    /// The day's delivery round under way, if any.
    pub async fn current_round(&self, connector: &str, day: NaiveDate) -> Result<Option<Round>> {
        self.read(&format!("{}round.json", prefix(connector, day)))
            .await
    }

    /// The shards of a collection some round delivered with nothing left to retry, each with
    /// what delivering it did (the newest such round's).
    pub async fn settled_shards(
        &self,
        connector: &str,
        day: NaiveDate,
        attempt: &str,
    ) -> Result<BTreeMap<u32, StatusLog>> {
        let mut done: Vec<String> = self
            .stage
            .list(&format!("{}{attempt}/rounds/", prefix(connector, day)))
            .await?
            .into_iter()
            .filter(|k| k.contains("/done/"))
            .collect();
        done.sort();
        let mut settled = BTreeMap::new();
        for key in done {
            let shard = key
                .rsplit('/')
                .next()
                .and_then(|name| name.strip_suffix(".json"))
                .and_then(|n| n.parse::<u32>().ok());
            let (Some(shard), Some(log)) = (shard, self.read::<StatusLog>(&key).await?) else {
                continue;
            };
            if log.nothing_to_retry() {
                settled.insert(shard, log);
            }
        }
        Ok(settled)
    }

    /// The shards of a round delivered so far, with what delivering each did.
    pub async fn round_done(
        &self,
        connector: &str,
        day: NaiveDate,
        round: &Round,
    ) -> Result<BTreeMap<u32, StatusLog>> {
        let at = format!(
            "{}{}/rounds/{}/done/",
            prefix(connector, day),
            round.attempt,
            round.round
        );
        let mut done = BTreeMap::new();
        for key in self.stage.list(&at).await? {
            let shard = key
                .rsplit('/')
                .next()
                .and_then(|name| name.strip_suffix(".json"))
                .and_then(|n| n.parse::<u32>().ok());
            if let (Some(shard), Some(log)) = (shard, self.read::<StatusLog>(&key).await?) {
                done.insert(shard, log);
            }
        }
        Ok(done)
    }

    /// What an earlier round of the round's collection did with a shard it delivered with
    /// nothing left to retry (the newest such round's log): a shard that round's daemon
    /// finished after this round began without it.
    pub async fn settled_before(
        &self,
        connector: &str,
        day: NaiveDate,
        round: &Round,
        shard: u32,
    ) -> Result<Option<StatusLog>> {
        let this_round = format!("/rounds/{}/", round.round);
        let name = format!("/done/{shard:04}.json");
        let mut earlier: Vec<String> = self
            .stage
            .list(&format!(
                "{}{}/rounds/",
                prefix(connector, day),
                round.attempt
            ))
            .await?
            .into_iter()
            .filter(|k| k.ends_with(&name) && !k.contains(&this_round))
            .collect();
        earlier.sort();
        for key in earlier.iter().rev() {
            if let Some(log) = self.read::<StatusLog>(key).await? {
                if log.nothing_to_retry() {
                    return Ok(Some(log));
                }
            }
        }
        Ok(None)
    }

    /// Whether a shard of the round is delivered.
    pub async fn shard_is_done(
        &self,
        connector: &str,
        day: NaiveDate,
        round: &Round,
        shard: u32,
    ) -> Result<bool> {
        Ok(self
            .stage
            .get(&done_key(connector, day, round, shard))
            .await?
            .is_some())
    }

    /// Marks a shard taken in the round; false when someone took it before (and may have
    /// imported some of its copies without recording them).
    pub async fn start_shard(
        &self,
        connector: &str,
        day: NaiveDate,
        round: &Round,
        shard: u32,
        owner: &str,
    ) -> Result<bool> {
        let key = format!(
            "{}{}/rounds/{}/started/{shard:04}",
            prefix(connector, day),
            round.attempt,
            round.round
        );
        Ok(self.stage.put_new(&key, owner.as_bytes()).await? == Created::New)
    }

    /// Records what delivering a shard did; written once its import records are.
    pub async fn finish_shard(
        &self,
        connector: &str,
        day: NaiveDate,
        round: &Round,
        shard: u32,
        log: &StatusLog,
    ) -> Result<()> {
        let key = done_key(connector, day, round, shard);
        let bytes = serde_json::to_vec(log).expect("a status log serializes");
        self.stage.put_new(&key, &bytes).await?;
        Ok(())
    }

    /// Takes a shard's lease for `owner`, unless another live owner holds it.
    pub async fn acquire_shard(
        &self,
        connector: &str,
        day: NaiveDate,
        shard: u32,
        owner: &str,
    ) -> Result<std::result::Result<DayLease, String>> {
        self.acquire(shard_lease_key(connector, day, shard), owner)
            .await
    }
}

#[cfg(test)]
mod tests;
