//! A message's files on the received message: those Graph parsed from the MIME, read from
//! the draft, and those taken out of it. Files posted whole go in the request that makes the
//! message while they fit it, the rest one by one after it; files of 2 MiB or more are
//! uploaded in chunks through an upload session.

use super::client::CallError;
use super::{copy_fields, listed, made, mail_parts, segment, GraphMailboxes, CHUNK};
use crate::mailbox::MailboxError;
use bytes::Bytes;
use reqwest::{Method, Url};
use serde_json::{json, Value};

/// Whether the draft Graph made from the MIME holds attachments, which are then read from
/// it: until they are, the draft must stay.
fn in_draft(draft: &Value) -> bool {
    draft["hasAttachments"].as_bool().unwrap_or(false)
}

/// The request that makes `message` (a JSON object) with the first of `files` (the JSON of
/// file attachments, in order) that fit within `budget` bytes together; returns it and how
/// many files it carries.
pub(super) fn with_files(message: &Value, files: &[Bytes], budget: usize) -> (Bytes, usize) {
    let mut body = serde_json::to_vec(message).expect("JSON serializes");
    const OPEN: &[u8] = b",\"attachments\":[";
    // The message less its closing brace, the list's opening, each file and a comma or
    // (after the last) the list's closing, and the closing brace.
    let mut size = body.len() - 1 + OPEN.len() + 1;
    let fit = files
        .iter()
        .take_while(|file| {
            size += file.len() + 1;
            size <= budget
        })
        .count();
    if fit == 0 {
        return (body.into(), 0);
    }
    let closing = body.pop();
    debug_assert_eq!(closing, Some(b'}'), "a JSON object");
    body.reserve(size - body.len());
    // An empty object takes the list without a comma before it.
    body.extend_from_slice(if body.len() > 1 { OPEN } else { &OPEN[1..] });
    for (i, file) in files[..fit].iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(file);
    }
    body.extend_from_slice(b"]}");
    (body.into(), fit)
}

impl GraphMailboxes {
    /// The files Graph parsed out of the MIME into the draft, as the JSON that posts each
    /// one again; none, without a request, when the draft has none.
    pub(super) async fn draft_files(
        &self,
        mailbox: &str,
        draft: &Value,
    ) -> Result<Vec<Bytes>, MailboxError> {
        if !in_draft(draft) {
            return Ok(Vec::new());
        }
        let files = self
            .attachments_of(mailbox, draft["id"].as_str().unwrap_or_default(), None)
            .await?;
        if let Some(odd) = files.iter().find(|f| !f["contentBytes"].is_string()) {
            // An attached message or a link has no bytes to post again as a file.
            return Err(MailboxError::Rejected {
                mailbox: mailbox.to_string(),
                reason: format!(
                    "Graph made an attachment of type {} from the message's MIME, which \
                     cannot be posted again as a file",
                    odd["@odata.type"].as_str().unwrap_or("unnamed")
                ),
            });
        }
        Ok(files
            .iter()
            .map(|attachment| {
                let mut copy = serde_json::Map::new();
                copy.insert(
                    "@odata.type".into(),
                    json!("#microsoft.graph.fileAttachment"),
                );
                copy_fields(
                    attachment,
                    &mut copy,
                    &[
                        "name",
                        "contentType",
                        "contentBytes",
                        "isInline",
                        "contentId",
                    ],
                );
                serde_json::to_vec(&Value::Object(copy))
                    .expect("JSON serializes")
                    .into()
            })
            .collect())
    }

    /// The attachments of message `id`, every page of them; only the fields `select` names
    /// when given.
    async fn attachments_of(
        &self,
        mailbox: &str,
        id: &str,
        select: Option<&str>,
    ) -> Result<Vec<Value>, MailboxError> {
        let mut url = self.url(&format!(
            "users/{}/messages/{}/attachments",
            segment(mailbox),
            segment(id)
        ));
        if let Some(select) = select {
            url.query_pairs_mut().append_pair("$select", select);
        }
        let mut files = Vec::new();
        // Graph may list a collection in pages, each naming the next.
        loop {
            let page = self
                .call(mailbox, Method::GET, url, None, true)
                .await
                .map_err(|e| self.error(mailbox, "attachment listing", e))?;
            files.extend_from_slice(listed(&page, mailbox, "attachment listing")?);
            match page["@odata.nextLink"].as_str() {
                None => break,
                Some(next) => url = self.next_page(mailbox, next)?,
            }
        }
        Ok(files)
    }

    /// Adds to the message `target`, which holds `carried` files (those its own request
    /// carried), the others: `posted` one by one, then `uploads` through upload sessions.
    pub(super) async fn add_files(
        &self,
        mailbox: &str,
        target: &str,
        carried: usize,
        posted: &[Bytes],
        uploads: &[mail_parts::Upload],
    ) -> Result<(), MailboxError> {
        let url = self.url(&format!(
            "users/{}/messages/{}/attachments",
            segment(mailbox),
            segment(target)
        ));
        for (i, body) in posted.iter().enumerate() {
            self.post_file(mailbox, target, &url, body, carried + i)
                .await?;
        }
        for part in uploads {
            self.upload(mailbox, target, part).await?;
        }
        Ok(())
    }

    /// Posts one file to the message `target`, which holds `before` files. A file whose
    /// answer was lost is never posted again blindly (the message would hold it twice): the
    /// message's files are counted, and the file is taken as posted when there is one more,
    /// posted once more when there is not.
    async fn post_file(
        &self,
        mailbox: &str,
        target: &str,
        url: &Url,
        body: &Bytes,
        before: usize,
    ) -> Result<(), MailboxError> {
        let mut lost = false;
        loop {
            let sent = self
                .post_once(mailbox, url.clone(), ("application/json", body.clone()))
                .await;
            let why = match sent {
                Ok(answer) => return made(&answer, mailbox, "attachment").map(drop),
                Err(CallError::Unanswered(why)) if !lost => why,
                Err(e) => return Err(self.error(mailbox, "attachment", e)),
            };
            match self
                .attachments_of(mailbox, target, Some("id"))
                .await?
                .len()
            {
                now if now == before + 1 => return Ok(()),
                now if now == before => lost = true,
                now => {
                    return Err(MailboxError::Unavailable(format!(
                        "Graph attachment for {mailbox}: {why}; the message then held {now} \
                         files where {before} or {} were expected{}",
                        before + 1,
                        super::UNKNOWN_EFFECT
                    )))
                }
            }
        }
    }

    /// An attachment of 2 MiB or more, through an upload session in chunks.
    async fn upload(
        &self,
        mailbox: &str,
        target: &str,
        part: &mail_parts::Upload,
    ) -> Result<(), MailboxError> {
        let user = segment(mailbox);
        let url = self.url(&format!(
            "users/{user}/messages/{}/attachments/createUploadSession",
            segment(target)
        ));
        let body = json!({ "AttachmentItem": {
            "attachmentType": "file", "name": part.name, "size": part.data.len(), "contentType": part.content_type,
        }});
        let session = self
            .post_json(mailbox, url, &body)
            .await
            .map_err(|e| self.error(mailbox, "upload session", e))?;
        let upload_url = session["uploadUrl"]
            .as_str()
            .and_then(|u| Url::parse(u).ok())
            .ok_or_else(|| {
                MailboxError::Unavailable(format!("Graph gave no upload URL for {mailbox}"))
            })?;
        let total = part.data.len();
        let mut start = 0;
        while start < total {
            let end = (start + CHUNK).min(total);
            // The upload URL is pre-authenticated: no token goes with it. A chunk is paced,
            // retried and throttled like every other request to the mailbox.
            let range = format!("bytes {start}-{}/{total}", end - 1);
            let chunk = bytes::Bytes::copy_from_slice(&part.data[start..end]);
            let answer = self
                .send(
                    mailbox,
                    Method::PUT,
                    upload_url.clone(),
                    Some(("application/octet-stream", chunk)),
                    false,
                    Some(&range),
                    true,
                )
                .await
                .map_err(|e| self.error(mailbox, &format!("upload of {}", part.name), e))?;
            // Graph says which bytes it still expects: nothing after the last chunk, the rest
            // of the file after any other. An answer that says otherwise lost bytes.
            let expected = answer["nextExpectedRanges"]
                .as_array()
                .and_then(|ranges| ranges.first())
                .and_then(Value::as_str)
                .and_then(|range| range.split('-').next()?.parse::<usize>().ok());
            if expected.is_some_and(|from| from != end) {
                return Err(MailboxError::Unavailable(format!(
                    "Graph upload of {} for {mailbox}: after bytes {start}-{} of {total} it \
                     still expects bytes from {}; the file is uploaded again with the copy",
                    part.name,
                    end - 1,
                    expected.unwrap_or_default()
                )));
            }
            start = end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_carries_the_files_that_fit_in_order() {
        let files: Vec<Bytes> = ["{\"name\":\"a\"}", "{\"name\":\"bb\"}", "{\"name\":\"c\"}"]
            .map(|f| Bytes::from(f.as_bytes()))
            .to_vec();
        let message = json!({"subject": "s"});
        let names = |body: &Bytes| -> Vec<String> {
            let body: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(body["subject"], "s");
            body["attachments"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|f| f["name"].as_str().unwrap().into())
                        .collect()
                })
                .unwrap_or_default()
        };
        let (whole, n) = with_files(&message, &files, 1 << 20);
        assert_eq!(
            (n, names(&whole)),
            (3, vec!["a".into(), "bb".into(), "c".into()])
        );
        // The budget is met exactly: the first two fit, and the third, though small, does
        // not go before the second.
        let two = with_files(&message, &files[..2], usize::MAX).0.len();
        let (body, n) = with_files(&message, &files, two);
        assert_eq!((n, body.len()), (2, two));
        assert_eq!(names(&body), ["a", "bb"]);
        let (body, n) = with_files(&message, &files, two - 1);
        assert_eq!((n, names(&body)), (1, vec!["a".into()]));
        let (body, n) = with_files(&message, &files, 10);
        assert_eq!((n, body), (0, Bytes::from(message.to_string())));
        let (body, n) = with_files(&json!({}), &files[..1], 1 << 20);
        assert_eq!(n, 1);
        assert_eq!(&body[..], b"{\"attachments\":[{\"name\":\"a\"}]}");
    }
}
