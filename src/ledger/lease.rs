//! Leases: the right to process one connector-day, or one delivery shard of it, held by one
//! daemon until it stops renewing it; taken, renewed and released with ETag conditions.
//!
//! Daemons on different machines do not share a clock, so a lease is never taken over on the
//! strength of the time its holder wrote in it: a taker first sees the lease (its ETag), and
//! takes it over only once it has seen that same version, unrenewed, for the lease's whole
//! life by its own clock. A holder renews ten times per life, so a live holder's lease is
//! never taken, however far apart the clocks are; a lease let go is free at once.

use super::Ledger;
use crate::stage::Version;
use crate::Result;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The right to process one connector-day, or one delivery shard of it, held by one daemon
/// until it stops renewing it.
#[derive(Debug, Clone)]
pub struct DayLease {
    key: String,
    version: Version,
    holder: LeaseHolder,
    /// The daemon it was taken over from, when that one had stopped renewing it (rather than
    /// let it go).
    taken_from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LeaseHolder {
    owner: String,
    /// Until when, by the holder's clock: for people reading the lease; takers do not rely on
    /// it (see the module's documentation).
    expires_at: DateTime<Utc>,
    /// How long the lease lasts unrenewed, in its holder's configuration. Absent from leases
    /// written by versions before takers relied on sightings: for those, `expires_at` decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl_secs: Option<u64>,
    /// Let go by its holder: free at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    released: bool,
}

/// Other daemons' leases as this process has seen them: each lease's version and when this
/// process first saw it.
pub(super) type Sightings = Arc<Mutex<HashMap<String, (Version, Instant)>>>;

/// Sightings older than this are forgotten when the list grows long.
const SIGHTINGS_KEPT: Duration = Duration::from_secs(24 * 3600);

impl DayLease {
    /// Who holds it.
    pub fn owner(&self) -> &str {
        &self.holder.owner
    }

    /// The daemon this lease was taken over from, when that one had stopped renewing it.
    pub fn taken_from(&self) -> Option<&str> {
        self.taken_from.as_deref()
    }
}

/// How long a lease lasts without renewal unless configured (`archiver.lease_secs`); a
/// daemon that died loses it once another has seen it unrenewed this long (at once to a
/// daemon on the same host, which sees that its process is gone).
pub const DEFAULT_LEASE_SECS: u64 = 300;

/// Whether a lease owner ran in this process's own process namespace on this machine, and
/// its process no longer exists: a daemon killed and restarted there takes its day back at
/// once instead of waiting a lease's life. A host name alone does not say that: containers
/// sharing the host's name (`--network host`), pods given one `hostname`, or cloned machines
/// each see other process ids, and a live daemon's pid missing from this namespace says
/// nothing about it.
fn holder_is_gone(owner: &str) -> bool {
    let ours = owner_id();
    match (owner_parts(owner), owner_parts(&ours)) {
        (Some((host, pid, space)), Some((our_host, _, our_space)))
            if host == our_host && space == our_space =>
        {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => false,
    }
}

/// An owner's host, process id and process namespace (None for owners written by versions
/// that did not name the namespace, and for any other form).
fn owner_parts(owner: &str) -> Option<(&str, u32, &str)> {
    let mut parts = owner.rsplitn(4, '/');
    let (space, _start, pid, host) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some((host, pid.parse().ok()?, space))
}

/// This process's namespace of process ids, on this boot of this machine: the kernel's boot
/// id and the namespace's inode, hashed short. Unreadable, a value of this process alone, so
/// that no other process is ever taken for one of the same namespace.
fn process_namespace() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id");
    let space = std::fs::read_link("/proc/self/ns/pid");
    match (boot, space) {
        (Ok(boot), Ok(space)) => {
            let both = format!("{}|{}", boot.trim(), space.display());
            crate::item::sha256_hex(both.as_bytes())[..8].to_string()
        }
        _ => format!("x{}", Utc::now().timestamp_nanos_opt().unwrap_or_default()),
    }
}

/// This process, as a lease owner: host, pid, start time and process namespace
/// (`host/pid/start/namespace`).
pub fn owner_id() -> String {
    static OWNER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    OWNER
        .get_or_init(|| {
            // The kernel's name for this host (its UTS namespace's: a pod's or a
            // container's own), then the file, then the environment.
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .filter(|h| !h.trim().is_empty())
                .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
                .or_else(|| std::env::var("HOSTNAME").ok())
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "host".into());
            format!(
                "{host}/{}/{}/{}",
                std::process::id(),
                Utc::now().timestamp_millis(),
                process_namespace()
            )
        })
        .clone()
}

impl Ledger {
    fn lease_key(connector: &str, day: NaiveDate) -> String {
        format!("ledger/{connector}/leases/{day}.json")
    }

    /// Takes the day's lease for `owner`, unless another live owner holds it (then Err
    /// saying who, and when it would be taken over, for the status log).
    pub async fn acquire_day(
        &self,
        connector: &str,
        day: NaiveDate,
        owner: &str,
    ) -> Result<std::result::Result<DayLease, String>> {
        self.acquire(Self::lease_key(connector, day), owner).await
    }

    /// Takes the lease at `key` for `owner` (a day's, or one of its delivery shards'),
    /// unless another live owner holds it: then Err with the holder.
    pub(super) async fn acquire(
        &self,
        key: String,
        owner: &str,
    ) -> Result<std::result::Result<DayLease, String>> {
        let holder = self.holder(owner, false);
        let bytes = serde_json::to_vec(&holder).expect("a lease serializes");
        // Two tries: the lease may be let go, or taken by another, between reading and
        // writing.
        for _ in 0..2 {
            let current = self.stage.get_versioned(&key).await?;
            let mut taken_from = None;
            let expected = match &current {
                None => None,
                Some((raw, version)) => {
                    let held: Option<LeaseHolder> = serde_json::from_slice(raw).ok();
                    match held {
                        Some(h) if h.owner != owner && !h.released && !holder_is_gone(&h.owner) => {
                            let unrenewed = self.unrenewed_for(&key, version);
                            let life = self.life_of(&h);
                            let lapsed = match h.ttl_secs {
                                Some(_) => unrenewed >= life,
                                None => h.expires_at <= Utc::now(),
                            };
                            if !lapsed && unrenewed.is_zero() && h.expires_at < Utc::now() {
                                // Most likely a daemon that died: say why this one waits.
                                tracing::info!(lease = %key, holder = %h.owner,
                                    expired_by_its_clock = %h.expires_at.format("%Y-%m-%d %H:%M:%S UTC"),
                                    wait_secs = life.as_secs(),
                                    "a lease past its time by its holder's clock: taken over once \
                                     seen unchanged that long (daemons' clocks are not trusted)");
                            }
                            if !lapsed {
                                return Ok(Err(format!(
                                    "another comms-archiver ({}) is on it (its lease unchanged \
                                     for {} s as seen from here; it is taken over once unchanged \
                                     for {} s)",
                                    h.owner,
                                    unrenewed.as_secs(),
                                    life.as_secs()
                                )));
                            }
                            taken_from = Some(h.owner);
                            Some(version.clone())
                        }
                        _ => Some(version.clone()),
                    }
                }
            };
            if let Some(version) = self.stage.put_if(&key, &bytes, expected.as_ref()).await? {
                if let Some(silent) = &taken_from {
                    tracing::warn!(lease = %key, holder = %silent,
                        "taking over a lease its holder stopped renewing");
                }
                self.seen.lock().expect("sightings").remove(&key);
                return Ok(Ok(DayLease {
                    key,
                    version,
                    holder,
                    taken_from,
                }));
            }
        }
        Ok(Err(
            "another comms-archiver took the lease at the same moment".into(),
        ))
    }

    /// What this daemon writes in a lease it holds.
    fn holder(&self, owner: &str, released: bool) -> LeaseHolder {
        let expires_at = match released {
            true => Utc::now() - chrono::Duration::seconds(1),
            false => Utc::now() + self.lease_ttl,
        };
        LeaseHolder {
            owner: owner.to_string(),
            expires_at,
            ttl_secs: Some(self.lease_ttl.num_seconds().max(1) as u64),
            released,
        }
    }

    /// How long a lease lasts unrenewed: its holder's life for it, or this daemon's when
    /// that is longer.
    fn life_of(&self, held: &LeaseHolder) -> Duration {
        let ours = self.lease_ttl.to_std().unwrap_or(Duration::ZERO);
        Duration::from_secs(held.ttl_secs.unwrap_or(0)).max(ours)
    }

    /// How long this process has seen the lease at `key` at `version` (zero when it sees
    /// this version for the first time).
    fn unrenewed_for(&self, key: &str, version: &Version) -> Duration {
        let now = Instant::now();
        let mut seen = self.seen.lock().expect("sightings");
        if let Some((known, since)) = seen.get(key) {
            if known == version {
                return now.duration_since(*since);
            }
        }
        if seen.len() >= 4096 {
            seen.retain(|_, (_, since)| now.duration_since(*since) < SIGHTINGS_KEPT);
        }
        seen.insert(key.to_string(), (version.clone(), now));
        Duration::ZERO
    }

    /// Whether a live run may hold the day's lease now (it is collecting or delivering it).
    /// A look at the lease's time, once, allowing one lease's life for clocks that differ:
    /// when in doubt, held.
    pub async fn is_leased(&self, connector: &str, day: NaiveDate) -> Result<bool> {
        let held: Option<LeaseHolder> = self.read(&Self::lease_key(connector, day)).await?;
        Ok(held.is_some_and(|h| {
            let allowance = chrono::Duration::from_std(self.life_of(&h)).unwrap_or_default();
            !h.released && !holder_is_gone(&h.owner) && h.expires_at + allowance > Utc::now()
        }))
    }

    /// Extends the lease; false when it was lost (another daemon took it over).
    pub async fn renew(&self, lease: &mut DayLease) -> Result<bool> {
        let holder = self.holder(&lease.holder.owner, false);
        let bytes = serde_json::to_vec(&holder).expect("a lease serializes");
        match self
            .stage
            .put_if(&lease.key, &bytes, Some(&lease.version))
            .await?
        {
            Some(version) => {
                lease.version = version;
                lease.holder = holder;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Gives the lease up: free at once for any daemon.
    pub async fn release(&self, lease: DayLease) -> Result<()> {
        let holder = self.holder(&lease.holder.owner, true);
        let bytes = serde_json::to_vec(&holder).expect("a lease serializes");
        self.stage
            .put_if(&lease.key, &bytes, Some(&lease.version))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::{LocalStage, Stage};

    const KEY: &str = "ledger/o2/leases/2026-11-20.json";

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 20).unwrap()
    }

    /// A ledger with leases of `secs`, and its stage (in `dir`).
    fn ledger(dir: &std::path::Path, secs: u64) -> (Ledger, Arc<dyn Stage>) {
        let stage: Arc<dyn Stage> = Arc::new(LocalStage::new(dir));
        (Ledger::new(stage.clone()).with_lease_secs(secs), stage)
    }

    /// A lease as a daemon on another host writes it: its clock `skew` from this one's, its
    /// leases lasting `ttl_secs` (None: written before leases said so).
    async fn held_elsewhere(stage: &Arc<dyn Stage>, skew: chrono::Duration, ttl_secs: Option<u64>) {
        let holder = LeaseHolder {
            owner: "elsewhere/1/1".into(),
            expires_at: Utc::now()
                + skew
                + chrono::Duration::seconds(ttl_secs.unwrap_or(300) as i64),
            ttl_secs,
            released: false,
        };
        stage
            .put(KEY, &serde_json::to_vec(&holder).unwrap())
            .await
            .unwrap();
    }

    async fn take(ledger: &Ledger) -> std::result::Result<DayLease, String> {
        ledger.acquire_day("o2", day(), "here/2/2").await.unwrap()
    }

    /// Another host's clock is an hour behind: by the time it writes, its lease ran out long
    /// ago. It is taken over only once this daemon has seen it unrenewed for its whole life,
    /// and every renewal starts that wait again.
    #[tokio::test(start_paused = true)]
    async fn a_live_lease_is_not_taken_however_far_behind_its_holders_clock() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, stage) = ledger(dir.path(), 300);
        let behind = -chrono::Duration::hours(1);
        held_elsewhere(&stage, behind, Some(300)).await;
        assert!(take(&ledger).await.is_err(), "taken on the holder's time");
        tokio::time::advance(Duration::from_secs(200)).await;
        assert!(take(&ledger).await.is_err());
        // Renewed (every tenth of its life, in truth): its life counts from when this daemon
        // sees the renewal.
        held_elsewhere(&stage, behind, Some(300)).await;
        tokio::time::advance(Duration::from_secs(200)).await;
        assert!(take(&ledger).await.is_err(), "taken 400 s after first seen");
        tokio::time::advance(Duration::from_secs(299)).await;
        assert!(take(&ledger).await.is_err());
        tokio::time::advance(Duration::from_secs(1)).await;
        let lease = take(&ledger).await.expect("seen unrenewed for 300 s");
        assert_eq!(lease.taken_from(), Some("elsewhere/1/1"));
        assert_eq!(lease.owner(), "here/2/2");
    }

    /// A host whose clock is an hour ahead wrote a lease that seems to run for an hour yet;
    /// it stopped renewing it, and it is taken over after its life all the same.
    #[tokio::test(start_paused = true)]
    async fn a_silent_lease_is_taken_after_its_life_however_far_ahead_its_holders_clock() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, stage) = ledger(dir.path(), 300);
        held_elsewhere(&stage, chrono::Duration::hours(1), Some(300)).await;
        assert!(take(&ledger).await.is_err());
        tokio::time::advance(Duration::from_secs(300)).await;
        assert!(take(&ledger).await.is_ok());
    }

    /// The operator is told why a lease long past its time is not taken at once (a `once`
    /// after a daemon died waits a lease's life), and when it is taken over; a lease within
    /// its time, most likely a live holder's, is waited for without a word.
    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_lease_past_its_time_is_logged_and_so_is_the_takeover() {
        use tracing_subscriber::util::SubscriberInitExt;
        let dir = tempfile::tempdir().unwrap();
        let (ledger, stage) = ledger(dir.path(), 300);
        let lines = crate::telemetry::Lines::default();
        let _guard = lines.subscriber(0).set_default();
        held_elsewhere(&stage, chrono::Duration::zero(), Some(300)).await;
        assert!(take(&ledger).await.is_err());
        assert!(!lines.text().contains("past its time"), "{}", lines.text());
        held_elsewhere(&stage, -chrono::Duration::hours(1), Some(300)).await;
        assert!(take(&ledger).await.is_err());
        let waiting = lines.text();
        assert!(
            waiting.contains("a lease past its time") && waiting.contains("\"wait_secs\":300"),
            "{waiting}"
        );
        tokio::time::advance(Duration::from_secs(300)).await;
        assert!(take(&ledger).await.is_ok());
        let taken = lines.text();
        assert!(
            taken.contains("taking over a lease its holder stopped renewing")
                && taken.contains("elsewhere/1/1"),
            "{taken}"
        );
    }

    /// The holder's leases last longer than this daemon's: its life is waited for.
    #[tokio::test(start_paused = true)]
    async fn a_holder_with_longer_leases_is_waited_for_as_long() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, stage) = ledger(dir.path(), 60);
        held_elsewhere(&stage, chrono::Duration::zero(), Some(600)).await;
        assert!(take(&ledger).await.is_err());
        tokio::time::advance(Duration::from_secs(599)).await;
        assert!(
            take(&ledger).await.is_err(),
            "taken after this daemon's 60 s"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(take(&ledger).await.is_ok());
    }

    /// A lease let go is free at once, whoever looks; one a holder keeps renewing is not.
    #[tokio::test(start_paused = true)]
    async fn a_released_lease_is_free_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (holder, stage) = ledger(dir.path(), 300);
        let (other, _) = ledger(dir.path(), 300);
        let mut lease = holder
            .acquire_day("o2", day(), "elsewhere/1/1")
            .await
            .unwrap()
            .unwrap();
        assert!(take(&other).await.is_err());
        for _ in 0..20 {
            tokio::time::advance(Duration::from_secs(30)).await;
            assert!(holder.renew(&mut lease).await.unwrap());
            assert!(take(&other).await.is_err(), "a renewed lease was taken");
        }
        assert!(other.is_leased("o2", day()).await.unwrap());
        holder.release(lease).await.unwrap();
        assert!(!other.is_leased("o2", day()).await.unwrap());
        let taken = take(&other).await.expect("released");
        assert_eq!(taken.taken_from(), None);
        drop(stage);
    }

    /// Leases written before they said how long they last expire by their time, as then.
    #[tokio::test(start_paused = true)]
    async fn a_lease_from_an_earlier_version_expires_by_its_time() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, stage) = ledger(dir.path(), 300);
        held_elsewhere(&stage, chrono::Duration::zero(), None).await;
        assert!(take(&ledger).await.is_err());
        held_elsewhere(&stage, -chrono::Duration::seconds(301), None).await;
        assert!(take(&ledger).await.is_ok());
    }

    /// Whether a day is being worked on, at one look: a lease that ran out by less than its
    /// life (a holder's clock may be behind) still counts.
    #[tokio::test]
    async fn a_lease_just_run_out_still_counts_as_held() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, stage) = ledger(dir.path(), 300);
        held_elsewhere(&stage, -chrono::Duration::seconds(400), Some(300)).await;
        assert!(ledger.is_leased("o2", day()).await.unwrap());
        held_elsewhere(&stage, -chrono::Duration::seconds(700), Some(300)).await;
        assert!(!ledger.is_leased("o2", day()).await.unwrap());
    }

    /// A holder on a host of the same name whose process id is missing here is gone only
    /// when it ran in this very process namespace; one from another namespace (a container
    /// sharing the host's name, a cloned machine) may be alive.
    #[test]
    fn a_missing_process_means_a_dead_holder_only_in_this_namespace() {
        let ours = owner_id();
        let (host, _, space) = owner_parts(&ours).expect("our own owner id parses");
        // A pid above the kernel's largest (4,194,304) exists nowhere.
        let dead = 4_194_305;
        assert!(holder_is_gone(&format!("{host}/{dead}/1/{space}")));
        assert!(!holder_is_gone(&format!("{host}/{dead}/1/0ther0ns")));
        assert!(
            !holder_is_gone(&format!("{host}/{dead}/1")),
            "an older owner's form"
        );
        assert!(!holder_is_gone(&format!("elsewhere/{dead}/1/{space}")));
        assert!(!holder_is_gone(&format!(
            "{host}/{}/1/{space}",
            std::process::id()
        )));
    }
}
