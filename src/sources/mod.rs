//! Partner sources. A transport (export drop directory; HTTPS pull) fetches a partner's
//! records for a day; the partner's [`RecordFormat`] turns each record into an [`Item`].
//! Transports and formats are independent, so every partner's parsing is shared by all
//! transports.
//!
//! A new partner is one module here implementing [`RecordFormat`] and declaring its
//! [`partner::Descriptor`], one line in [`partner::REGISTRY`], its fixtures and its contract
//! in `docs/partners/` (see `docs/architecture.md`).

pub mod celltrust;
mod config;
mod drop_dir;
pub mod eml;
pub mod https;
mod intake;
pub mod merge1;
pub mod partner;
mod record;
pub mod telemessage;
mod zip_drop;

pub use config::{ConnectorConfig, HttpsConfig, SourceConfig};
pub use drop_dir::DropSource;
pub use intake::IntakeSource;
pub use partner::{Building, Partner};
pub use zip_drop::ZipDropSource;

use crate::item::{Attachment, Item};
use async_trait::async_trait;
use chrono::NaiveDate;
use serde::de::DeserializeOwned;

/// One record pulled from a partner.
#[derive(Debug)]
pub enum Pulled {
    Item(Box<Item>),
    /// A record the connector must not import (a CellTrust A2P message, a unit that is not
    /// enabled): counted and listed in the status log, never silently dropped.
    Excluded {
        partner_id: String,
        reason: String,
        detail: String,
    },
    /// An item heavier than `max_item_bytes` before it is even rendered (a file, or the
    /// message a partner rendered): what makes it so heavy was not read, and its copies are
    /// failed `size_exceeded` with `detail`, which says what and how large.
    TooLarge {
        item: Box<Item>,
        detail: String,
    },
    /// A record that could not be turned into an item: reported, and the day stays open.
    Invalid {
        /// Where it came from, e.g. `o2-0001.jsonl line 7`.
        location: String,
        partner_id: Option<String>,
        reason: String,
    },
}

/// A day's records could not be pulled; the day stays open and is retried.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The partner has not delivered the day yet.
    #[error("{0}")]
    NotReady(String),
    /// The delivery does not match its manifest: nothing of it is imported.
    #[error("{0}")]
    Reconciliation(String),
    /// The partner or the drop directory could not be read.
    #[error("{0}")]
    Unavailable(String),
    /// The drop directory itself is not there: a configuration or mount problem, not a
    /// partner that has not delivered yet.
    #[error("{0}")]
    Missing(String),
    /// The partner refused the credentials or the scope asked for: retrying cannot help
    /// until an admin changes the configuration or the partner account.
    #[error("{0}")]
    Denied(String),
    /// A file of one item is larger than the item may weigh; it was not read past that.
    /// Never ends a day: the item is failed `size_exceeded`.
    #[error("{0}")]
    TooLarge(String),
}

impl SourceError {
    /// The reason named in the status log.
    pub fn reason(&self) -> &'static str {
        match self {
            SourceError::NotReady(_) => "source_not_ready",
            SourceError::Reconciliation(_) => "reconciliation",
            SourceError::Unavailable(_) => "source_unavailable",
            SourceError::Missing(_) => "source_missing",
            SourceError::Denied(_) => "access_denied",
            SourceError::TooLarge(_) => "size_exceeded",
        }
    }
}

/// A partner system, seen as a stream of items per day.
#[async_trait]
pub trait Source: Send + Sync {
    /// Opens the day's records. Errors here mean nothing of the day could be read.
    async fn open(&self, day: NaiveDate) -> Result<Box<dyn ItemStream>, SourceError>;
    /// Where the source is, for logs (never with credentials).
    fn describe(&self) -> String;
    /// Whether the source can be read (`check`): a drop directory that exists and can be
    /// listed; with `connect`, a partner that signs in. What was found, in words.
    async fn check(&self, connect: bool) -> Result<String, SourceError> {
        let _ = connect;
        Ok(self.describe())
    }
}

/// Whether a drop directory is there to read: the error says it is a configuration or
/// mount problem when it is not.
pub async fn drop_directory(root: &std::path::Path) -> Result<(), SourceError> {
    let missing = |why: String| {
        SourceError::Missing(format!(
            "the drop directory {} {why}: a configuration or mount problem (check the \
             connector's source.path and that its volume is mounted), not a partner that has \
             not delivered yet",
            root.display()
        ))
    };
    match tokio::fs::metadata(root).await {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(missing("is not a directory".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(missing("does not exist".into()))
        }
        Err(e) => return Err(missing(format!("cannot be looked at ({e})"))),
    }
    tokio::fs::read_dir(root)
        .await
        .map(|_| ())
        .map_err(|e| missing(format!("cannot be listed ({e})")))
}

/// The records of one day, one at a time: no day is held in memory.
#[async_trait]
pub trait ItemStream: Send {
    /// The next record, None at the end of the day.
    async fn next(&mut self) -> Result<Option<Pulled>, SourceError>;
}

/// A file an item refers to, fetched by the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRef {
    /// Path relative to the delivery (export drop) or URL (HTTPS).
    pub location: String,
    pub name: String,
    pub content_type: String,
}

/// How a partner's records travel: JSON objects, or whole RFC 5322 messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// One JSON object per record (JSON Lines in a drop, `items` array over HTTPS).
    Json,
    /// One message per record (`.eml` files in a drop, base64 `mime` over HTTPS).
    Mime,
}

/// What a record turned out to be.
#[derive(Debug)]
pub enum Decoded {
    Item(Box<Item>),
    Excluded { reason: String, detail: String },
}

/// How one partner's records become items; shared by every transport.
pub trait RecordFormat: Send + Sync + 'static {
    type Record: Send;
    /// How the records travel.
    const WIRE: Wire;
    /// Reads one record from its bytes (a JSON object, or a message).
    fn decode(&self, bytes: &[u8]) -> Result<Self::Record, String>;
    /// The partner's id of a record, for reports when the record is invalid.
    fn partner_id(record: &Self::Record) -> String;
    /// The files the record refers to, in the order [`RecordFormat::to_item`] expects them.
    fn media(record: &Self::Record) -> Vec<MediaRef>;
    /// The item, given the record and its fetched files; Err names what is wrong.
    fn to_item(&self, record: Self::Record, media: Vec<Attachment>) -> Result<Decoded, String>;
}

/// Reads a JSON record, naming the first thing wrong with it.
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("not a valid record: {e}"))
}

/// How much of a record line is held while a drop is reconciled against its manifest: only
/// whether a line is blank matters there, and a longer line is counted as a record unheld.
pub const RECONCILE_LINE_CAP: u64 = 64 * 1024;

/// How much of a message is read when the whole is too large to read: enough for any honest
/// header block, from which the item is known and reported.
pub const HEAD_BYTES: usize = 256 * 1024;

/// A message record too large to read whole: the item is made from its header block and
/// failed `size_exceeded` with `detail`.
pub fn pull_too_large<F: RecordFormat>(
    format: &F,
    head: &[u8],
    location: String,
    detail: String,
) -> Pulled {
    let head = crate::message_bytes::header_block(head);
    match format.decode(head) {
        Ok(record) => {
            let partner_id = F::partner_id(&record);
            let media = F::media(&record).into_iter().map(empty_file).collect();
            too_large(format.to_item(record, media), location, partner_id, detail)
        }
        Err(reason) => Pulled::Invalid {
            location,
            partner_id: None,
            reason: format!("{detail}; its header block cannot be read either: {reason}"),
        },
    }
}

fn empty_file(m: MediaRef) -> Attachment {
    Attachment {
        name: m.name,
        content_type: m.content_type,
        data: Vec::new(),
    }
}

fn too_large(
    decoded: Result<Decoded, String>,
    location: String,
    partner_id: String,
    detail: String,
) -> Pulled {
    match pulled(decoded, location, partner_id) {
        Pulled::Item(item) => Pulled::TooLarge { item, detail },
        other => other,
    }
}

/// Decodes one record, fetches its media with `fetch` and makes the item: what every
/// transport does with a record once it has its bytes. `fetch` is told how many bytes the
/// item may still take; a file over that (`SourceError::TooLarge`) is not read, and neither
/// are the files after it: the item is failed `size_exceeded`. A record that cannot be
/// decoded, or whose media the partner cannot serve (`SourceError::Unavailable`), is
/// reported invalid; any other fetch error ends the stream.
pub async fn pull<F, Fut>(
    format: &F,
    bytes: &[u8],
    location: String,
    limit: u64,
    fetch: impl Fn(MediaRef, u64) -> Fut,
) -> Result<Pulled, SourceError>
where
    F: RecordFormat,
    Fut: std::future::Future<Output = Result<Attachment, SourceError>>,
{
    if bytes.len() as u64 > limit && F::WIRE == Wire::Mime {
        let detail = format!(
            "the message is {} bytes, over the limit of {limit} bytes",
            bytes.len()
        );
        return Ok(pull_too_large(format, bytes, location, detail));
    }
    let record = match format.decode(bytes) {
        Ok(record) => record,
        Err(reason) => {
            return Ok(Pulled::Invalid {
                location,
                partner_id: None,
                reason,
            })
        }
    };
    let partner_id = F::partner_id(&record);
    let mut media = Vec::new();
    let mut left = limit;
    let mut references = F::media(&record).into_iter();
    while let Some(reference) = references.next() {
        let shown = reference.location.clone();
        let name = reference.name.clone();
        let fallback = reference.clone();
        match fetch(reference, left).await {
            Ok(file) => {
                left = left.saturating_sub(file.data.len() as u64);
                media.push(file);
            }
            Err(SourceError::TooLarge(why)) => {
                media.push(empty_file(fallback));
                media.extend(references.map(empty_file));
                let detail = format!("media {name}: {why}");
                return Ok(too_large(
                    format.to_item(record, media),
                    location,
                    partner_id,
                    detail,
                ));
            }
            Err(SourceError::Unavailable(why)) => {
                return Ok(Pulled::Invalid {
                    location,
                    partner_id: Some(partner_id),
                    reason: format!("media {shown}: {why}"),
                })
            }
            Err(e) => return Err(e),
        }
    }
    Ok(pulled(format.to_item(record, media), location, partner_id))
}

/// [`pull`] for a record that is a whole message and names no separate media (an EML).
pub async fn pull_message<F: RecordFormat>(
    format: &F,
    bytes: &[u8],
    location: String,
    limit: u64,
) -> Result<Pulled, SourceError> {
    let no_media = |m: MediaRef, _left: u64| async move {
        Err(SourceError::Unavailable(format!(
            "unexpected media {}",
            m.location
        )))
    };
    pull(format, bytes, location, limit, no_media).await
}

/// The record's outcome as the pipeline sees it.
pub fn pulled(decoded: Result<Decoded, String>, location: String, partner_id: String) -> Pulled {
    match decoded {
        Ok(Decoded::Item(item)) => Pulled::Item(item),
        Ok(Decoded::Excluded { reason, detail }) => Pulled::Excluded {
            partner_id,
            reason,
            detail,
        },
        Err(reason) => Pulled::Invalid {
            location,
            partner_id: Some(partner_id),
            reason,
        },
    }
}

/// Builds the source of a configured connector: its partner's format behind its transport,
/// as the partner's descriptor says. Secrets are read here; a missing one is an error naming
/// its key.
pub fn build(building: &Building<'_>) -> crate::Result<Box<dyn Source>> {
    (building.connector.partner.descriptor().build)(building)
}
