//! Header names of the tracking headers every rendered item carries.

pub const CONNECTOR: &str = "X-Comms-Archiver-Connector";
pub const PARTNER: &str = "X-Comms-Archiver-Partner";
pub const KIND: &str = "X-Comms-Archiver-Kind";
pub const DIRECTION: &str = "X-Comms-Archiver-Direction";
pub const ITEM_ID: &str = "X-Comms-Archiver-Item-Id";
pub const ITEM_KEY: &str = "X-Comms-Archiver-Item-Key";
pub const CONVERSATION: &str = "X-Comms-Archiver-Conversation";
/// Every header name the archiver owns starts so (compared without case).
pub const OWN_PREFIX: &str = "X-Comms-Archiver-";
/// What a partner's field named like ours is renamed with in a passed-through message.
pub const ORIGINAL_PREFIX: &str = "X-Original-";

/// Every header the renderer writes for an item it renders (lowercase); nothing else ever
/// starts a line of the header block, whatever the partner data.
pub const WRITTEN: &[&str] = &[
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "x-comms-archiver-connector",
    "x-comms-archiver-partner",
    "x-comms-archiver-kind",
    "x-comms-archiver-direction",
    "x-comms-archiver-item-id",
    "x-comms-archiver-item-key",
    "x-comms-archiver-conversation",
];
