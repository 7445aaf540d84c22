//! Mailbox sinks: one folder per connector under each mailbox's Inbox.

mod maildir;

pub use maildir::MaildirTree;

use crate::item::ItemKey;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// One copy of an item for one mailbox.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// The mailbox address (lowercase).
    pub mailbox: &'a str,
    /// The Inbox subfolder, e.g. "O2 SMS and Voice Network Archiver".
    pub folder: &'a str,
    pub key: &'a ItemKey,
    /// The item's own time: the message's received date in the mailbox.
    pub time: DateTime<Utc>,
    /// The rendered RFC 5322 message.
    pub message: &'a [u8],
}

/// Why a mailbox did not take a message.
#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    /// The address has no mailbox: reported as a user mapping failure, not retried.
    #[error("mailbox {0} does not exist")]
    NoSuchMailbox(String),
    /// The server refuses this message for good (too large, malformed): reported, not retried.
    #[error("{mailbox} refused the message: {reason}")]
    Rejected { mailbox: String, reason: String },
    /// The server or store is unreachable or failing: the day stays open and is retried.
    #[error("{0}")]
    Unavailable(String),
}

/// A store of mailboxes that messages are imported into.
#[async_trait]
pub trait Mailbox: Send + Sync {
    /// Whether the delivery's message is already in its folder (used when recovering).
    async fn contains(&self, delivery: &Delivery<'_>) -> Result<bool, MailboxError>;
    /// Imports the message into the folder as read, with the item's time as its date;
    /// creates the folder when needed. Importing a message that is there already is a no-op.
    async fn append(&self, delivery: &Delivery<'_>) -> Result<(), MailboxError>;
    /// Where the mailboxes are, for logs (never with credentials).
    fn describe(&self) -> String;
}
