//! Partner sources. A transport (export drop directory; HTTPS pull) fetches a partner's
//! records for a day; the partner's [`RecordFormat`] turns each record into an [`Item`].
//! Transports and formats are independent, so every partner's parsing is shared by all
//! transports.
//!
//! A new partner is one module here implementing [`RecordFormat`], plus its docs in
//! `docs/partners/`.

mod drop_dir;
pub mod telemessage;

pub use drop_dir::DropSource;

use crate::item::{Attachment, Item};
use async_trait::async_trait;
use chrono::NaiveDate;
use serde::de::DeserializeOwned;

/// One record pulled from a partner.
#[derive(Debug)]
pub enum Pulled {
    Item(Box<Item>),
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
}

impl SourceError {
    /// The reason named in the status log.
    pub fn reason(&self) -> &'static str {
        match self {
            SourceError::NotReady(_) => "source_not_ready",
            SourceError::Reconciliation(_) => "reconciliation",
            SourceError::Unavailable(_) => "source_unavailable",
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

/// How one partner's records become items; shared by every transport.
pub trait RecordFormat: Send + Sync + 'static {
    type Record: DeserializeOwned + Send;
    /// The partner's id of a record, for reports when the record is invalid.
    fn partner_id(record: &Self::Record) -> &str;
    /// The files the record refers to, in the order [`RecordFormat::to_item`] expects them.
    fn media(record: &Self::Record) -> Vec<MediaRef>;
    /// The item, given the record and its fetched files; Err names what is wrong.
    fn to_item(&self, record: Self::Record, media: Vec<Attachment>) -> Result<Item, String>;
}
