//! Copying a message's attachments onto the received message: those Graph parsed from the
//! MIME, posted back whole, and those taken out of it, posted whole under 2 MiB or uploaded
//! in chunks through an upload session.

use super::{copy_fields, mail_parts, segment, GraphMailboxes, CHUNK};
use crate::mailbox::MailboxError;
use reqwest::{Method, Url};
use serde_json::{json, Value};

/// Whether the draft Graph made from the MIME holds attachments, which are then copied from
/// it: until they are, the draft must stay.
pub(super) fn in_draft(draft: &Value) -> bool {
    draft["hasAttachments"].as_bool().unwrap_or(false)
}

impl GraphMailboxes {
    /// Copies the draft's attachments and the `taken` ones taken out of its MIME onto the
    /// message `target`.
    pub(super) async fn copy_attachments(
        &self,
        mailbox: &str,
        draft: &Value,
        target: &str,
        taken: &[mail_parts::Taken],
    ) -> Result<(), MailboxError> {
        let user = segment(mailbox);
        if in_draft(draft) {
            let url = self.url(&format!(
                "users/{user}/messages/{}/attachments",
                segment(draft["id"].as_str().unwrap_or_default())
            ));
            let list = self
                .call(mailbox, Method::GET, url, None, true)
                .await
                .map_err(|e| self.error(mailbox, "attachment listing", e))?;
            for attachment in list["value"].as_array().cloned().unwrap_or_default() {
                let mut copy = serde_json::Map::new();
                copy.insert(
                    "@odata.type".into(),
                    json!("#microsoft.graph.fileAttachment"),
                );
                copy_fields(
                    &attachment,
                    &mut copy,
                    &[
                        "name",
                        "contentType",
                        "contentBytes",
                        "isInline",
                        "contentId",
                    ],
                );
                self.attach(mailbox, target, copy).await?;
            }
        }
        for part in taken {
            match part {
                mail_parts::Taken::Uploaded(part) => self.upload(mailbox, target, part).await?,
                mail_parts::Taken::Posted(body) => {
                    let url = self.url(&format!(
                        "users/{user}/messages/{}/attachments",
                        segment(target)
                    ));
                    self.post_serialized(mailbox, url, body.clone())
                        .await
                        .map_err(|e| self.error(mailbox, "attachment", e))?;
                }
            }
        }
        Ok(())
    }

    /// Posts one file attachment, whole, to the message `target`.
    async fn attach(
        &self,
        mailbox: &str,
        target: &str,
        attachment: serde_json::Map<String, Value>,
    ) -> Result<(), MailboxError> {
        let url = self.url(&format!(
            "users/{}/messages/{}/attachments",
            segment(mailbox),
            segment(target)
        ));
        self.post_json(mailbox, url, &Value::Object(attachment))
            .await
            .map(|_| ())
            .map_err(|e| self.error(mailbox, "attachment", e))
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
            self.send(
                mailbox,
                Method::PUT,
                upload_url.clone(),
                Some(("application/octet-stream", chunk)),
                false,
                Some(&range),
            )
            .await
            .map_err(|e| self.error(mailbox, &format!("upload of {}", part.name), e))?;
            start = end;
        }
        Ok(())
    }
}
