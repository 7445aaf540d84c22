//! The `[archiver]` section: limits that apply to every connector's day.

use crate::checks::Invalid;
use serde::Deserialize;

pub use crate::item::DEFAULT_MAX_ITEM_BYTES;

/// Bytes of rendered messages in flight unless configured (`archiver.max_in_flight_bytes`).
pub const DEFAULT_MAX_IN_FLIGHT_BYTES: u64 = 48 * 1024 * 1024;

/// Mailbox shards a day's delivery is split into unless configured
/// (`archiver.delivery_shards`).
pub const DEFAULT_DELIVERY_SHARDS: u32 = 16;

/// Limits that apply to every connector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiverConfig {
    /// Items whose rendered message is larger are not imported (failed, `size_exceeded`).
    #[serde(default = "default_max_item_bytes")]
    pub max_item_bytes: u64,
    /// Copies staged and imported at once. Unset: what suits the mailbox backend (8 for a
    /// Maildir, 16 over IMAP, 64 through Graph).
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// Bytes of rendered messages in flight at once, whatever their number, shared by every
    /// connector-day at work: the bound on the memory they take together. A message may start
    /// while any room is left.
    #[serde(default = "default_max_in_flight_bytes")]
    pub max_in_flight_bytes: u64,
    /// What becomes of a copy over `max_item_bytes`: "skip" (held, not imported: what
    /// Microsoft's connectors do) or "drop-attachments" (imported with its largest files left
    /// out and listed, each kept whole in the stage: partially imported).
    #[serde(default)]
    pub oversize: Oversize,
    /// The largest item read from a partner at all, files included (never less than
    /// `max_item_bytes`): an item over `max_item_bytes` but within this is read whole, so
    /// that it can be held or its files kept. An item larger still is not read (failed,
    /// `size_exceeded`; the partner keeps it). Such an item goes alone, and takes about three
    /// times its size in memory while it is held.
    #[serde(default = "default_max_original_bytes")]
    pub max_original_bytes: u64,
    /// Mailbox shards a day's delivery is split into: the pieces daemons sharing a stage
    /// take from one another. A mailbox's copies of a day are all in one shard. A day keeps
    /// the count its first run gave it.
    #[serde(default = "default_delivery_shards")]
    pub delivery_shards: u32,
    /// How long a lease on a day or a delivery shard lasts without renewal (renewed every
    /// tenth of it): how long a daemon that dies on another host keeps others waiting.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
}

/// What becomes of a copy over `archiver.max_item_bytes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Oversize {
    /// Held in the stage, not imported; a later run imports it if the limit is raised.
    #[default]
    Skip,
    /// Imported without the files that make it too large, which are listed in their place
    /// and kept whole in the stage.
    DropAttachments,
}

/// The largest item read whole with `oversize = "drop-attachments"` unless configured.
pub const DEFAULT_MAX_ORIGINAL_BYTES: u64 = 100 * 1024 * 1024;

impl Default for ArchiverConfig {
    fn default() -> Self {
        ArchiverConfig {
            max_item_bytes: DEFAULT_MAX_ITEM_BYTES,
            max_in_flight: None,
            max_in_flight_bytes: DEFAULT_MAX_IN_FLIGHT_BYTES,
            oversize: Oversize::Skip,
            max_original_bytes: DEFAULT_MAX_ORIGINAL_BYTES,
            delivery_shards: DEFAULT_DELIVERY_SHARDS,
            lease_secs: crate::ledger::DEFAULT_LEASE_SECS,
        }
    }
}

impl ArchiverConfig {
    /// Checks the limits are ones a day can work with.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.max_in_flight.is_some_and(|n| !(1..=1024).contains(&n)) {
            return Err(Invalid::new("max_in_flight", "must be 1 to 1024"));
        }
        if !(1..=4096).contains(&self.delivery_shards) {
            return Err(Invalid::new("delivery_shards", "must be 1 to 4096"));
        }
        if !(10..=3600).contains(&self.lease_secs) {
            return Err(Invalid::new(
                "lease_secs",
                "must be 10 to 3600 (seconds a lease lasts without renewal)",
            ));
        }
        if self.max_in_flight_bytes < 1024 * 1024 {
            return Err(Invalid::new(
                "max_in_flight_bytes",
                "must be at least 1048576 (1 MiB)",
            ));
        }
        if self.max_item_bytes == 0 {
            return Err(Invalid::new("max_item_bytes", "must be greater than 0"));
        }
        Ok(())
    }

    /// The most a partner's item may weigh for it to be read at all.
    pub fn read_limit(&self) -> u64 {
        self.max_original_bytes.max(self.max_item_bytes)
    }
}

fn default_max_item_bytes() -> u64 {
    DEFAULT_MAX_ITEM_BYTES
}

fn default_max_in_flight_bytes() -> u64 {
    DEFAULT_MAX_IN_FLIGHT_BYTES
}

fn default_max_original_bytes() -> u64 {
    DEFAULT_MAX_ORIGINAL_BYTES
}

fn default_delivery_shards() -> u32 {
    DEFAULT_DELIVERY_SHARDS
}

fn default_lease_secs() -> u64 {
    crate::ledger::DEFAULT_LEASE_SECS
}
