//! Microsoft Graph mailboxes (Exchange Online), app-only.
//!
//! A message created from MIME is always a draft, and a draft can never become a received
//! message. So each import: creates the draft from the MIME (while the connector's folder is
//! looked up), reads the attachments Graph parsed into it, re-creates it as JSON in the
//! folder with PidTagMessageFlags (read, not unsent), the delivery and submit times, the
//! threading properties, the transport headers and its files set, and deletes the draft
//! meanwhile, also when a step failed. Every request is sized as it is sent: the MIME
//! (base64 of a message whose files are base64 already) leaves out its binary attachments,
//! and text ones until it fits one request. Files under 2 MiB go in the request that makes
//! the message while they fit it, the rest are posted one by one after it, and files from
//! 2 MiB go through upload sessions, whose chunks are paced and retried like any other
//! request. A named extended property holds the item key, so an item already imported is
//! found again; a message whose files go after the request that makes it gets the key only
//! once it holds them all. At most 4 requests run at once per mailbox, paced under 10,000
//! per 10 minutes and under 150 MB uploaded per 5 minutes; throttled and failing requests are
//! retried by the one policy ([`crate::retry`]), after Retry-After when Graph sends one.
//!
//! Graph's answers are read, not trusted: a success that cannot be read, or lacks what Graph
//! always sends, fails the copy as one whose import may have taken effect. Looking for a
//! copy before it is taken again also deletes what an import cut off left of it: a message
//! short of files, and drafts (found by Message-ID).

use super::token::TokenSource;
use super::{Delivery, Mailbox, MailboxError};
pub use client::Limit;
use reqwest::{Method, Url};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// The named extended property holding the item key.
pub const ITEM_KEY_PROPERTY: &str =
    "String {6f0d7b52-3c8a-4c1e-9a53-0c1f2d7e4b91} Name CommsArchiverItemKey";
/// The named extended property a message is made with instead of [`ITEM_KEY_PROPERTY`] when
/// files go after the request that makes it: it gets its item key only once it holds every
/// file, so a message cut off before its last file is never found as the copy imported.
/// (The same length as the other, so that a request carries the same files with either.)
pub const PARTIAL_PROPERTY: &str =
    "String {6f0d7b52-3c8a-4c1e-9a53-0c1f2d7e4b91} Name CommsArchiverPartial";
const _: () = assert!(PARTIAL_PROPERTY.len() == ITEM_KEY_PROPERTY.len());
/// Requests to one mailbox at once (Exchange's MailboxConcurrency limit).
pub const CONCURRENCY_PER_MAILBOX: usize = 4;
/// What one request may carry, with room to spare under Graph's limit of about 4 MB (a
/// request over it is refused with 413). A message's MIME is base64 inside the request, and
/// its attachments are base64 inside the MIME: a 2.5 MB photo alone makes a 4.4 MB request.
pub const REQUEST_BUDGET: usize = 3584 * 1024;
/// Attachments at least this large go through an upload session; smaller ones are posted
/// whole (an upload session refuses a file under 2 MiB with
/// ErrorAttachmentSizeShouldNotBeLessThanMinimumSize, and a posted one of 2 MiB is a
/// request of 2.7 MiB).
pub const UPLOAD_SESSION_MIN: usize = 2 * 1024 * 1024;
/// Upload session chunks: a multiple of 320 KiB, under 4 MiB.
const CHUNK: usize = 10 * 320 * 1024;
/// Graph's base URL (e.g. `https://graph.microsoft.com/v1.0`) and an app-only token source.
pub struct GraphSettings {
    /// The Microsoft 365 tenant the mailboxes belong to.
    pub tenant: String,
    pub base: Url,
    pub tokens: Arc<TokenSource>,
    pub max_retries: usize,
    pub timeout: Duration,
    /// What may be uploaded to one mailbox in any window ([`DEFAULT_UPLOADS`] unless
    /// configured).
    pub uploads: Limit,
}

/// Exchange's limit on what an app uploads (the bodies of POST, PUT and PATCH) to one
/// mailbox: 150 MB in any 5 minutes.
pub const DEFAULT_UPLOADS: Limit = Limit {
    most: 150_000_000,
    window: Duration::from_secs(300),
};

/// The mailboxes of one Microsoft 365 tenant, through Graph.
pub struct GraphMailboxes {
    settings: GraphSettings,
    http: reqwest::Client,
    mailboxes: Mutex<HashMap<String, Arc<MailboxState>>>,
}

impl GraphMailboxes {
    /// The id of the connector's folder under the Inbox, created when missing.
    async fn folder(&self, mailbox: &str, name: &str) -> Result<String, MailboxError> {
        let state = self.state(mailbox).await;
        // Held while the folder is looked up: a mailbox's first copies, starting together,
        // wait for one lookup rather than each making its own.
        let mut folders = state.folders.lock().await;
        if let Some(id) = folders.get(name) {
            return Ok(id.clone());
        }
        let user = segment(mailbox);
        let find = || {
            let mut url = self.url(&format!("users/{user}/mailFolders/inbox/childFolders"));
            url.query_pairs_mut().append_pair(
                "$filter",
                &format!("displayName eq '{}'", name.replace('\'', "''")),
            );
            url
        };
        let found = self
            .call(mailbox, Method::GET, find(), None, true)
            .await
            .map_err(|e| self.error(mailbox, "folder lookup", e))?;
        let id = match listed(&found, mailbox, "folder lookup")?.first() {
            Some(folder) => made(folder, mailbox, "folder lookup")?,
            None => {
                let body = json!({ "displayName": name, "isHidden": false });
                let url = self.url(&format!("users/{user}/mailFolders/inbox/childFolders"));
                match self.post_json(mailbox, url, &body).await {
                    Ok(created) => made(&created, mailbox, "folder creation")?,
                    // Created by someone else meanwhile: look again.
                    Err(CallError::Refused(r)) if r.code == "ErrorFolderExists" => {
                        let found = self
                            .call(mailbox, Method::GET, find(), None, true)
                            .await
                            .map_err(|e| self.error(mailbox, "folder lookup", e))?;
                        let folder = listed(&found, mailbox, "folder lookup")?.first();
                        made(folder.unwrap_or(&Value::Null), mailbox, "folder lookup")?
                    }
                    Err(e) => return Err(self.error(mailbox, "folder creation", e)),
                }
            }
        };
        folders.insert(name.to_string(), id.clone());
        Ok(id)
    }

    /// Creates the received message from the draft's JSON with its files: `posted` (the JSON
    /// of each, in order) in the same request while they fit it, the rest and `uploads`
    /// after; returns its id.
    async fn import(
        &self,
        d: &Delivery<'_>,
        folder: &str,
        draft: &Value,
        mut posted: Vec<bytes::Bytes>,
        uploads: &[mail_parts::Upload],
    ) -> Result<String, MailboxError> {
        let user = segment(d.mailbox);
        let headers =
            String::from_utf8_lossy(crate::message_bytes::header_fields(d.message)).into_owned();
        let time = d.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut properties = vec![
            json!({ "id": "Integer 0x0E07", "value": "1" }),
            json!({ "id": "SystemTime 0x0E06", "value": time }),
            json!({ "id": "SystemTime 0x0039", "value": time }),
            json!({ "id": "String 0x007D", "value": headers }),
            json!({ "id": ITEM_KEY_PROPERTY, "value": d.key.as_str() }),
        ];
        debug_assert_eq!(properties[KEY_AT]["id"], ITEM_KEY_PROPERTY);
        for (tag, name) in [
            ("String 0x1042", "In-Reply-To"),
            ("String 0x1039", "References"),
        ] {
            if let Some(value) = crate::message_bytes::field(d.message, name) {
                properties.push(json!({ "id": tag, "value": value }));
            }
        }
        let mut message = serde_json::Map::new();
        copy_fields(
            draft,
            &mut message,
            &[
                "subject",
                "body",
                "from",
                "sender",
                "toRecipients",
                "ccRecipients",
                "bccRecipients",
                "replyTo",
                "internetMessageId",
                "importance",
            ],
        );
        message.insert(
            "singleValueExtendedProperties".into(),
            Value::Array(properties),
        );
        let url = self.url(&format!(
            "users/{user}/mailFolders/{}/messages",
            segment(folder)
        ));
        let mut message = Value::Object(message);
        let (mut body, carried) = attachments::with_files(&message, &posted, REQUEST_BUDGET);
        let whole = carried == posted.len() && uploads.is_empty();
        if !whole {
            message["singleValueExtendedProperties"][KEY_AT]["id"] = json!(PARTIAL_PROPERTY);
            body = attachments::with_files(&message, &posted[..carried], REQUEST_BUDGET).0;
        }
        // What the request carries is held once, in it.
        posted.drain(..carried);
        let id = match self
            .post_once(d.mailbox, url, ("application/json", body))
            .await
        {
            Ok(created) => made(&created, d.mailbox, "message creation")?,
            // The message may have been made: it is looked for by the key it was made with,
            // never made a second time.
            Err(lost @ CallError::Unanswered(_)) => {
                let key = if whole {
                    ITEM_KEY_PROPERTY
                } else {
                    PARTIAL_PROPERTY
                };
                match self.find(d, folder, key).await? {
                    Some(id) => id,
                    None => return Err(self.error(d.mailbox, "message creation", lost)),
                }
            }
            Err(e) => return Err(self.error(d.mailbox, "message creation", e)),
        };
        if whole {
            return Ok(id);
        }
        // The files its request did not carry, then its item key; a message that cannot
        // get them is removed again (and, should that fail too, found as partial and removed
        // when the copy is looked for before it is taken again).
        let mut completed = self
            .add_files(d.mailbox, &id, carried, &posted, uploads)
            .await;
        if completed.is_ok() {
            let key = json!({ "singleValueExtendedProperties": [
                { "id": ITEM_KEY_PROPERTY, "value": d.key.as_str() }
            ]});
            let url = self.url(&format!("users/{user}/messages/{}", segment(&id)));
            completed = self
                .call(
                    d.mailbox,
                    Method::PATCH,
                    url,
                    Some(("application/json", key.to_string().into_bytes().into())),
                    true,
                )
                .await
                .map_err(|e| self.error(d.mailbox, "item key", e))
                .and_then(|answer| made(&answer, d.mailbox, "item key").map(drop));
        }
        if let Err(e) = completed {
            self.remove_message(d.mailbox, &id, "message removal").await;
            return Err(e);
        }
        Ok(id)
    }
}

/// Where the item key is among a message's extended properties.
const KEY_AT: usize = 4;

impl GraphMailboxes {
    /// Deletes a temporary draft or a partial message; one that cannot be is left (and
    /// logged), to be found again when its copy is looked for.
    async fn remove_message(&self, mailbox: &str, id: &str, what: &str) {
        let url = self.url(&format!(
            "users/{}/messages/{}",
            segment(mailbox),
            segment(id)
        ));
        if let Err(e) = self.call(mailbox, Method::DELETE, url, None, true).await {
            let e = self.error(mailbox, what, e);
            tracing::warn!(mailbox, error = %e, "a temporary draft or partial message could not be removed");
        }
    }

    /// The search for the ids of the messages in `folder` whose extended property
    /// `property` holds the copy's item key.
    fn search(&self, d: &Delivery<'_>, folder: &str, property: &str) -> Url {
        let mut url = self.url(&format!(
            "users/{}/mailFolders/{}/messages",
            segment(d.mailbox),
            segment(folder)
        ));
        url.query_pairs_mut()
            .append_pair("$filter", &property_is(property, d.key.as_str()))
            .append_pair("$select", "id");
        url
    }

    /// The id of a message of the copy in `folder` whose extended property `property` holds
    /// the copy's item key.
    async fn find(
        &self,
        d: &Delivery<'_>,
        folder: &str,
        property: &str,
    ) -> Result<Option<String>, MailboxError> {
        let mut url = self.search(d, folder, property);
        url.query_pairs_mut().append_pair("$top", "1");
        let found = self
            .call(d.mailbox, Method::GET, url, None, true)
            .await
            .map_err(|e| self.error(d.mailbox, "search", e))?;
        match listed(&found, d.mailbox, "search")?.first() {
            Some(message) => made(message, d.mailbox, "search").map(Some),
            None => Ok(None),
        }
    }

    /// Deletes the messages of the copy left partial in its folder (made, not given every
    /// file) by an import cut off.
    async fn remove_partial(&self, d: &Delivery<'_>, folder: &str) -> Result<(), MailboxError> {
        let mut url = self.search(d, folder, PARTIAL_PROPERTY);
        url.query_pairs_mut().append_pair(
            "$expand",
            &format!("singleValueExtendedProperties($filter=id eq '{ITEM_KEY_PROPERTY}')"),
        );
        let found = self
            .call(d.mailbox, Method::GET, url, None, true)
            .await
            .map_err(|e| self.error(d.mailbox, "search", e))?;
        for message in listed(&found, d.mailbox, "search")? {
            let keyed = message["singleValueExtendedProperties"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["id"] == ITEM_KEY_PROPERTY));
            if !keyed {
                let id = made(message, d.mailbox, "search")?;
                self.remove_message(d.mailbox, &id, "partial message removal")
                    .await;
            }
        }
        Ok(())
    }

    /// Deletes the drafts made from the delivery's MIME left among the mailbox's Drafts.
    async fn remove_drafts_of(&self, d: &Delivery<'_>) {
        match self.drafts_of(d).await {
            Ok(ids) => {
                for id in ids {
                    self.remove_message(d.mailbox, &id, "draft removal").await;
                }
            }
            Err(e) => {
                tracing::warn!(mailbox = d.mailbox, error = %e, "a temporary draft may be left among the mailbox's Drafts");
            }
        }
    }

    /// The drafts among the mailbox's Drafts made from the delivery's MIME (found by its
    /// Message-ID): what is left of a draft whose answer was lost.
    async fn drafts_of(&self, d: &Delivery<'_>) -> Result<Vec<String>, MailboxError> {
        let Some(message_id) = crate::message_bytes::field(d.message, "Message-ID") else {
            return Ok(Vec::new());
        };
        let mut url = self.url(&format!(
            "users/{}/mailFolders/drafts/messages",
            segment(d.mailbox)
        ));
        url.query_pairs_mut()
            .append_pair(
                "$filter",
                &format!(
                    "internetMessageId eq '{}'",
                    message_id.trim().replace('\'', "''")
                ),
            )
            .append_pair("$select", "id");
        let found = self
            .call(d.mailbox, Method::GET, url, None, true)
            .await
            .map_err(|e| self.error(d.mailbox, "draft search", e))?;
        listed(&found, d.mailbox, "draft search")?
            .iter()
            .map(|draft| made(draft, d.mailbox, "draft search"))
            .collect()
    }
}

/// The filter for the messages whose extended property `property` is `value`.
fn property_is(property: &str, value: &str) -> String {
    format!(
        "singleValueExtendedProperties/Any(ep: ep/id eq '{property}' and ep/value eq '{value}')"
    )
}

/// The id of what a successful answer says it made or found. Graph always gives it; an
/// answer without one (a gateway's page, an answer changed on its way) leaves unknown what
/// was made, so the copy is looked for in its mailbox before it is imported again.
fn made(answer: &Value, mailbox: &str, what: &str) -> Result<String, MailboxError> {
    match answer["id"].as_str() {
        Some(id) if !id.is_empty() => Ok(id.to_string()),
        _ => Err(MailboxError::Unavailable(format!(
            "Graph {what} for {mailbox}: its answer gave no id{}",
            UNKNOWN_EFFECT
        ))),
    }
}

/// The items of a successful answer that lists (`value`); an answer without the list is not
/// taken for an empty one.
fn listed<'a>(answer: &'a Value, mailbox: &str, what: &str) -> Result<&'a [Value], MailboxError> {
    answer["value"]
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| {
            MailboxError::Unavailable(format!(
                "Graph {what} for {mailbox}: its answer holds no list{}",
                UNKNOWN_EFFECT
            ))
        })
}

/// Said of a success whose answer cannot be used.
pub(super) const UNKNOWN_EFFECT: &str = "; whether it took effect is unknown, so the copy is \
    looked for in its mailbox before it is imported again (a proxy or gateway between this \
    host and Graph answering in its place shows this)";

/// Copies the fields of `from` that are present and not null.
fn copy_fields(from: &Value, to: &mut serde_json::Map<String, Value>, fields: &[&str]) {
    for field in fields {
        if let Some(v) = from.get(*field).filter(|v| !v.is_null()) {
            to.insert(field.to_string(), v.clone());
        }
    }
}

/// A path segment, percent-encoded.
fn segment(raw: &str) -> String {
    url::form_urlencoded::byte_serialize(raw.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[async_trait::async_trait]
impl Mailbox for GraphMailboxes {
    /// Graph takes four requests at once per mailbox: four copies of each, many mailboxes.
    fn delivery_shape(&self) -> super::DeliveryShape {
        super::DeliveryShape {
            per_mailbox: CONCURRENCY_PER_MAILBOX,
            mailboxes: None,
            batch: 1,
        }
    }

    async fn pace(&self, mailbox: &str, bytes: u64) -> super::Paced {
        self.keep_uploads(mailbox, bytes).await
    }

    async fn probe(&self, sample: Option<&str>, connect: bool) -> Result<String, MailboxError> {
        let tenant = self.destination();
        match (connect, sample) {
            (false, _) => Ok(format!(
                "{tenant}: not contacted (check --connect signs in)"
            )),
            (true, None) => Ok(format!(
                "{tenant}: not signed in, no mapping CSV names a mailbox to look at"
            )),
            (true, Some(mailbox)) => {
                let url = self.url(&format!("users/{}/mailFolders/inbox", segment(mailbox)));
                self.call(mailbox, Method::GET, url, None, true)
                    .await
                    .map_err(|e| self.error(mailbox, "inbox lookup", e))?;
                Ok(format!(
                    "{tenant}: signed in, the Inbox of {mailbox} is readable"
                ))
            }
        }
    }

    async fn contains(&self, d: &Delivery<'_>) -> Result<bool, MailboxError> {
        let folder = self.folder(d.mailbox, d.folder).await?;
        let found = self.find(d, &folder, ITEM_KEY_PROPERTY).await?.is_some();
        // The copy is looked for because an earlier import of it may have been cut off: what
        // that import left goes, a message short of files (it has no item key, and would
        // stay beside the whole one) and a draft among the Drafts (eDiscovery would find
        // the message twice).
        self.remove_partial(d, &folder).await?;
        self.remove_drafts_of(d).await;
        Ok(found)
    }

    async fn append(&self, d: &Delivery<'_>) -> Result<(), MailboxError> {
        let user = segment(d.mailbox);
        // A draft is made among the Drafts and needs no folder: it is made, its files read
        // and it goes while the folder is looked up (or created), so that a mailbox's first
        // copies do not hold it back until the folder is known.
        // The draft's id once it was read (None when a draft may have been made whose id is
        // unknown: its answer lost or unusable), and whether other drafts of the copy may have
        // been made (its request sent again after an answer was lost); those are looked for
        // by Message-ID.
        let (read, removable) = tokio::sync::oneshot::channel::<(Option<String>, bool)>();
        let drafted = async {
            // Binary attachments leave the MIME, and so do text ones until it fits a request
            // (about 4 MB); they go with the message, or one by one after it (the largest
            // through upload sessions).
            let mail_parts::Cut { draft: mime, taken } =
                crate::message_bytes::work_on(d.message, |message| {
                    mail_parts::cut(message, REQUEST_BUDGET, UPLOAD_SESSION_MIN)
                })
                .await
                .map_err(|e| MailboxError::Unavailable(format!("preparing the requests: {e}")))?;
            let url = self.url(&format!("users/{user}/messages"));
            // A draft whose answer was lost is asked for once more: the one it may have made
            // is found by its Message-ID and goes with the other.
            let mut lost = false;
            let answer = loop {
                let sent = self
                    .post_once(d.mailbox, url.clone(), ("text/plain", mime.clone()))
                    .await;
                match sent {
                    Err(CallError::Unanswered(_)) if !lost => lost = true,
                    sent => break sent,
                }
            };
            let draft = match answer {
                Ok(draft) => draft,
                Err(e) => {
                    // Refused as a request: no draft was made. Otherwise one may have been.
                    if lost || !matches!(&e, CallError::Refused(r) if r.status.is_client_error()) {
                        let _ = read.send((None, true));
                    }
                    return Err(self.error(d.mailbox, "draft from MIME", e));
                }
            };
            let id = match made(&draft, d.mailbox, "draft from MIME") {
                Ok(id) => id,
                Err(e) => {
                    let _ = read.send((None, true));
                    return Err(e);
                }
            };
            // The message is made of what the answer says of the draft: an answer without
            // its body or whether it holds files would make a message short of them.
            if !draft["body"].is_object() || !draft["hasAttachments"].is_boolean() {
                let _ = read.send((Some(id), lost));
                return Err(MailboxError::Unavailable(format!(
                    "Graph draft from MIME for {}: its answer gave no body or no \
                     hasAttachments{UNKNOWN_EFFECT}",
                    d.mailbox
                )));
            }
            // The files Graph parsed out of the MIME are read from the draft; nothing more
            // is (what the message takes from it is in the answer that made it), so it goes.
            let files = self.draft_files(d.mailbox, &draft).await;
            let _ = read.send((Some(id), lost));
            Ok::<_, MailboxError>((taken, draft, files?))
        };
        // The draft goes, whatever happens to the message: once it was made.
        let remove_draft = async {
            let Ok((id, others)) = removable.await else {
                return;
            };
            if let Some(id) = &id {
                self.remove_message(d.mailbox, id, "draft removal").await;
            }
            if id.is_none() || others {
                self.remove_drafts_of(d).await;
            }
        };
        let import = async {
            let (folder, drafted) = tokio::join!(self.folder(d.mailbox, d.folder), drafted);
            let (taken, draft, mut posted) = drafted?;
            let folder = folder?;
            let mut uploads = Vec::new();
            for part in taken {
                match part {
                    mail_parts::Taken::Posted(body) => posted.push(body),
                    mail_parts::Taken::Uploaded(part) => uploads.push(part),
                }
            }
            self.import(d, &folder, &draft, posted, &uploads).await
        };
        tokio::join!(import, remove_draft).0.map(|_| ())
    }

    fn describe(&self) -> String {
        format!("Microsoft Graph {}", self.settings.base)
    }

    fn destination(&self) -> String {
        format!(
            "graph {} tenant {}",
            self.settings.base, self.settings.tenant
        )
    }
}

mod attachments;
mod client;
pub mod mail_parts;
mod mime_files;

use client::{CallError, MailboxState};
