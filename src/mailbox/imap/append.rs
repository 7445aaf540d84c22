//! What an import says to a mailbox's folders: the connector's folder found or created,
//! whether it holds a message already (the archiver's own item key, confirmed), and several
//! messages in one APPEND where the server takes it.

use super::syntax::{modified_utf7, quoted};
use super::{ImapMailboxes, ImapSession};
use crate::mailbox::Mailbox;
use futures::StreamExt;

impl ImapMailboxes {
    /// The full name of the connector's folder, created and subscribed when missing.
    pub(super) async fn folder(
        &self,
        session: &mut ImapSession,
        mailbox: &str,
        folder: &str,
    ) -> Result<String, async_imap::error::Error> {
        // A separate statement: the guard must be gone before the arm below locks again.
        let known = self.delimiters.lock().await.get(mailbox).cloned();
        let delimiter = match known {
            Some(d) => d,
            None => {
                // LIST "" "INBOX" names the delimiter too, and parses everywhere (an empty
                // pattern answers with an empty name that some parsers wait on forever).
                let mut names = session.list(Some(""), Some("INBOX")).await?;
                let mut delimiter = None;
                while let Some(name) = names.next().await {
                    delimiter = name?.delimiter().map(str::to_string).or(delimiter);
                }
                drop(names);
                let d = delimiter.unwrap_or_else(|| "/".into());
                self.delimiters
                    .lock()
                    .await
                    .insert(mailbox.to_string(), d.clone());
                d
            }
        };
        let full = format!("INBOX{delimiter}{}", modified_utf7(folder));
        let key = (mailbox.to_string(), full.clone());
        if self.folders.lock().await.contains(&key) {
            return Ok(full);
        }
        let mut found = false;
        {
            let mut names = session.list(Some(""), Some(&quoted(&full))).await?;
            while let Some(name) = names.next().await {
                found |= name?.name() == full;
            }
        }
        if !found {
            match session.create(&full).await {
                Ok(()) => tracing::info!(mailbox, folder = %full, "created the folder"),
                // Another connection created it first.
                Err(async_imap::error::Error::No(why))
                    if why.to_ascii_lowercase().contains("exist") => {}
                Err(e) => return Err(e),
            }
            let _ = session.subscribe(&full).await;
        }
        self.folders.lock().await.insert(key);
        Ok(full)
    }

    /// Whether the server takes several messages in one APPEND, asked of the first session.
    pub(super) async fn takes_multiappend(
        &self,
        session: &mut ImapSession,
    ) -> Result<bool, async_imap::error::Error> {
        if let Some(known) = *self.multiappend.lock().await {
            return Ok(known);
        }
        let capabilities = session.capabilities().await?;
        let takes = capabilities.has_str("MULTIAPPEND") && capabilities.has_str("LITERAL+");
        tracing::debug!(server = %self.describe(), multiappend = takes, "IMAP capabilities");
        *self.multiappend.lock().await = Some(takes);
        Ok(takes)
    }
}

/// Whether the selected folder holds the message. Every message the archiver stores carries
/// the item key in its own header block; the search finds candidates, and a candidate counts
/// only when its first item key field, the one the archiver wrote, is this item's (a partner's
/// message that once carried a field named like ours, or a Message-ID like ours, is no hit).
pub(super) async fn holds(
    session: &mut ImapSession,
    item_key: &str,
) -> Result<bool, async_imap::error::Error> {
    let found = session
        .uid_search(format!(
            "HEADER {} {}",
            crate::render::headers::ITEM_KEY,
            quoted(item_key)
        ))
        .await?;
    if found.is_empty() {
        return Ok(false);
    }
    let uids: Vec<String> = found.iter().map(u32::to_string).collect();
    let mut fetched = session
        .uid_fetch(uids.join(","), "BODY.PEEK[HEADER]")
        .await?;
    let mut confirmed = false;
    while let Some(fetch) = fetched.next().await {
        let fetch = fetch?;
        confirmed |= fetch
            .header()
            .and_then(crate::render::own_item_key)
            .is_some_and(|key| key == item_key);
    }
    Ok(confirmed)
}

/// One message of an APPEND: its INTERNALDATE (quoted) and its bytes.
pub(super) struct Appended {
    pub(super) item_key: String,
    pub(super) date: String,
    pub(super) message: bytes::Bytes,
}

/// Appends the messages to `folder` in one command (RFC 3502), each as a non-synchronizing
/// literal (RFC 7888), so the whole batch is one round trip; the server stores all of them or
/// none.
pub(super) async fn append_in_one(
    session: &mut ImapSession,
    folder: &str,
    messages: &[&Appended],
) -> Result<(), async_imap::error::Error> {
    use async_imap::error::Error;
    use async_imap::imap_proto::{Response, Status};
    use tokio::io::AsyncWriteExt;
    let Some((first, rest)) = messages.split_first() else {
        return Ok(());
    };
    let tag = session
        .run_command(format!(
            "APPEND {} (\\Seen) {} {{{}+}}",
            quoted(folder),
            first.date,
            first.message.len()
        ))
        .await?;
    let stream = session.get_mut();
    stream.write_all(&first.message).await?;
    for next in rest {
        let head = format!(" (\\Seen) {} {{{}+}}\r\n", next.date, next.message.len());
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&next.message).await?;
    }
    stream.write_all(b"\r\n").await?;
    stream.flush().await?;
    loop {
        let Some(response) = session.read_response().await? else {
            return Err(Error::ConnectionLost);
        };
        if let Response::Done {
            tag: done,
            status,
            code,
            information,
        } = response.parsed()
        {
            if *done != tag {
                continue;
            }
            let why = format!("{code:?} {}", information.as_deref().unwrap_or_default());
            return match status {
                Status::Ok => Ok(()),
                Status::No => Err(Error::No(why)),
                _ => Err(Error::Bad(why)),
            };
        }
    }
}
