//! Leases: the right to process one connector-day, or one delivery shard of it, held by one
//! daemon until it expires; taken, renewed and released with ETag conditions.

use super::Ledger;
use crate::stage::Version;
use crate::Result;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// The right to process one connector-day, or one delivery shard of it, held by one daemon
/// until it expires.
#[derive(Debug, Clone)]
pub struct DayLease {
    key: String,
    version: Version,
    holder: LeaseHolder,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LeaseHolder {
    owner: String,
    expires_at: DateTime<Utc>,
}

impl DayLease {
    /// Who holds it.
    pub fn owner(&self) -> &str {
        &self.holder.owner
    }
}

/// How long a lease lasts without renewal unless configured (`archiver.lease_secs`); a
/// daemon that died loses it after this long (at once to a daemon on the same host, which
/// sees that its process is gone).
pub const DEFAULT_LEASE_SECS: u64 = 300;

/// Whether a lease owner ran on this host and its process no longer exists (a daemon that
/// was killed and restarted takes its day back at once instead of waiting for the expiry).
fn holder_is_gone(owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, '/');
    let (_start, pid, host) = (parts.next(), parts.next(), parts.next());
    let ours = owner_id();
    let our_host = ours.rsplitn(3, '/').nth(2);
    match (host, pid.and_then(|p| p.parse::<u32>().ok())) {
        (Some(host), Some(pid)) if Some(host) == our_host => {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => false,
    }
}

/// This process, as a lease owner: host, pid and start time.
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
                "{host}/{}/{}",
                std::process::id(),
                Utc::now().timestamp_millis()
            )
        })
        .clone()
}

impl Ledger {
    fn lease_key(connector: &str, day: NaiveDate) -> String {
        format!("ledger/{connector}/leases/{day}.json")
    }

    /// Takes the day's lease for `owner`, unless another live owner holds it (then Err with
    /// the holder and its expiry, for the status log).
    pub async fn acquire_day(
        &self,
        connector: &str,
        day: NaiveDate,
        owner: &str,
    ) -> Result<std::result::Result<DayLease, String>> {
        self.acquire(Self::lease_key(connector, day), owner).await
    }

    /// Takes the lease at `key` for `owner` (a day's, or one of its delivery shards'),
    /// unless another live owner holds it: then Err with the holder and its expiry.
    pub(super) async fn acquire(
        &self,
        key: String,
        owner: &str,
    ) -> Result<std::result::Result<DayLease, String>> {
        let holder = LeaseHolder {
            owner: owner.to_string(),
            expires_at: Utc::now() + self.lease_ttl,
        };
        let bytes = serde_json::to_vec(&holder).expect("a lease serializes");
        // Two tries: the lease may be released or expire between reading and writing.
        for _ in 0..2 {
            let current = self.stage.get_versioned(&key).await?;
            let expected = match &current {
                None => None,
                Some((raw, version)) => {
                    let held: Option<LeaseHolder> = serde_json::from_slice(raw).ok();
                    match held {
                        Some(h)
                            if h.owner != owner
                                && h.expires_at > Utc::now()
                                && !holder_is_gone(&h.owner) =>
                        {
                            return Ok(Err(format!(
                                "another comms-archiver ({}) is on it, its lease runs until {}",
                                h.owner,
                                h.expires_at.format("%Y-%m-%d %H:%M:%S UTC")
                            )))
                        }
                        _ => Some(version.clone()),
                    }
                }
            };
            if let Some(version) = self.stage.put_if(&key, &bytes, expected.as_ref()).await? {
                return Ok(Ok(DayLease {
                    key,
                    version,
                    holder,
                }));
            }
        }
        Ok(Err(
            "another comms-archiver took the lease at the same moment".into(),
        ))
    }

    /// Whether a live run holds the day's lease now (it is collecting or delivering it).
    pub async fn is_leased(&self, connector: &str, day: NaiveDate) -> Result<bool> {
        let held: Option<LeaseHolder> = self.read(&Self::lease_key(connector, day)).await?;
        Ok(held.is_some_and(|h| h.expires_at > Utc::now() && !holder_is_gone(&h.owner)))
    }

    /// Extends the lease; false when it was lost (another daemon took it after it expired).
    pub async fn renew(&self, lease: &mut DayLease) -> Result<bool> {
        let holder = LeaseHolder {
            owner: lease.holder.owner.clone(),
            expires_at: Utc::now() + self.lease_ttl,
        };
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

    /// Gives the lease up (it expires at once).
    pub async fn release(&self, lease: DayLease) -> Result<()> {
        let holder = LeaseHolder {
            owner: lease.holder.owner,
            expires_at: Utc::now() - chrono::Duration::seconds(1),
        };
        let bytes = serde_json::to_vec(&holder).expect("a lease serializes");
        self.stage
            .put_if(&lease.key, &bytes, Some(&lease.version))
            .await?;
        Ok(())
    }
}
