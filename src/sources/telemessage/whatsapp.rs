//! TeleMessage WhatsApp Archiver records (Phone Archiver and Cloud Archiver): 1:1 and group
//! chats, replies, calls, attachments and files, and messages deleted by the sender, which
//! are archived with a visible marker, never dropped.

use super::archived_by;
use crate::item::{Attachment, Content, Conversation, Item, Quote, Role, WhatsAppMessage};
use crate::mapping::normalize_phone;
use crate::sources::partner::{AuthKind, Building, Descriptor, Transport};
use crate::sources::record::{direction, media_refs, split_recording, CallRecord, FileRef, Party};
use crate::sources::{decode_json, Decoded, MediaRef, RecordFormat, Wire};
use chrono::{DateTime, Utc};
use phonenumber::country;
use serde::Deserialize;

/// TeleMessage WhatsApp Archiver (Phone Archiver and Cloud Archiver).
pub const PARTNER: Descriptor = Descriptor {
    name: "telemessage-whatsapp",
    default_folder: "WhatsApp Archiver",
    invalid_domain: "telemessage.invalid",
    vendor: "telemessage",
    feed: "whatsapp/items",
    auth: AuthKind::Session,
    transports: &[
        Transport::Drop,
        Transport::ZipDrop,
        Transport::Https,
        Transport::Smtp,
    ],
    celltrust_table: false,
    email: Some(super::super::eml::EmlFlavor::TeleMessage),
    build: |building: &Building<'_>| {
        building.source(
            WhatsAppFormat {
                region: building.region,
            },
            None,
        )
    },
};

/// One WhatsApp record as TeleMessage delivers it.
#[derive(Debug, Clone, Deserialize)]
pub struct WhatsAppRecord {
    pub message_id: String,
    /// "message" or "call".
    #[serde(rename = "type")]
    pub kind: String,
    pub timestamp: DateTime<Utc>,
    pub direction: String,
    /// The archived employee's WhatsApp number.
    pub archived_number: String,
    /// "phone-archiver" or "cloud-archiver".
    #[serde(default)]
    pub source: Option<String>,
    pub chat: Chat,
    pub from: Party,
    #[serde(default)]
    pub to: Vec<Party>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub reply_to: Option<ReplyTo>,
    #[serde(default)]
    pub attachments: Vec<FileRef>,
    #[serde(default)]
    pub deleted: Option<Deleted>,
    #[serde(default)]
    pub call: Option<CallRecord>,
}

/// The chat a record belongs to.
#[derive(Debug, Clone, Deserialize)]
pub struct Chat {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub group: bool,
}

/// The message a record replies to.
#[derive(Debug, Clone, Deserialize)]
pub struct ReplyTo {
    pub message_id: String,
    #[serde(default)]
    pub author: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
}

/// Set when the sender deleted the message.
#[derive(Debug, Clone, Deserialize)]
pub struct Deleted {
    pub at: DateTime<Utc>,
}

/// The WhatsApp record format.
#[derive(Debug, Clone, Copy)]
pub struct WhatsAppFormat {
    pub region: country::Id,
}

impl RecordFormat for WhatsAppFormat {
    type Record = WhatsAppRecord;
    const WIRE: Wire = Wire::Json;

    fn decode(&self, bytes: &[u8]) -> Result<WhatsAppRecord, String> {
        decode_json(bytes)
    }

    fn partner_id(record: &WhatsAppRecord) -> String {
        record.message_id.clone()
    }

    fn media(record: &WhatsAppRecord) -> Vec<MediaRef> {
        media_refs(&record.attachments, record.call.as_ref())
    }

    fn to_item(&self, record: WhatsAppRecord, media: Vec<Attachment>) -> Result<Decoded, String> {
        self.item(record, media)
            .map(|item| Decoded::Item(Box::new(item)))
    }
}

impl WhatsAppFormat {
    fn item(&self, record: WhatsAppRecord, media: Vec<Attachment>) -> Result<Item, String> {
        if record.message_id.trim().is_empty() {
            return Err("message_id is empty".to_string());
        }
        let archived = normalize_phone(&record.archived_number, self.region).ok_or_else(|| {
            format!(
                "archived_number '{}' is not a phone number",
                record.archived_number
            )
        })?;
        let direction = direction(&record.direction)?;
        if record.to.is_empty() {
            return Err("the record has no recipient ('to' is empty)".to_string());
        }
        let mut participants = vec![record.from.participant(Role::From, self.region)];
        participants.extend(
            record
                .to
                .iter()
                .map(|p| p.participant(Role::To, self.region)),
        );
        archived_by(&mut participants, &archived, "archived_number")?;

        let chat = Conversation {
            id: record.chat.id.clone(),
            name: record.chat.name.clone(),
        };
        let (media, recording) = split_recording(media, record.call.as_ref());
        let content = match record.kind.to_ascii_lowercase().as_str() {
            "message" => {
                if record.text.is_none() && media.is_empty() && record.deleted.is_none() {
                    return Err("a message record has neither text nor attachments".into());
                }
                Content::WhatsApp(WhatsAppMessage {
                    text: record.text,
                    group: record.chat.group.then(|| chat.clone()),
                    quote: record.reply_to.map(|r| Quote {
                        partner_id: r.message_id,
                        author: r.author,
                        text: r.text,
                    }),
                    media,
                    deleted_at: record.deleted.map(|d| d.at),
                })
            }
            "call" => Content::WhatsAppCall(
                record
                    .call
                    .ok_or("a call record has no 'call' details".to_string())?
                    .to_call(recording)?,
            ),
            other => return Err(format!("type '{other}' is neither message nor call")),
        };
        Ok(Item {
            partner_id: record.message_id,
            time: record.timestamp,
            direction,
            conversation: Some(chat),
            participants,
            content,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Item, String> {
        let format = WhatsAppFormat {
            region: country::Id::GB,
        };
        let record = format.decode(json.as_bytes())?;
        let media = WhatsAppFormat::media(&record)
            .into_iter()
            .map(|m| Attachment {
                name: m.name,
                content_type: m.content_type,
                data: vec![1],
            })
            .collect();
        format.item(record, media)
    }

    #[test]
    fn group_reply_with_deleted_marker() {
        let item = parse(
            r#"{"message_id":"W1","type":"message","timestamp":"2026-11-20T10:00:00Z",
                "direction":"inbound","archived_number":"+447700900101",
                "chat":{"id":"G1","name":"Desk","group":true},
                "from":{"number":"+447700900555"},
                "to":[{"number":"+447700900101"},{"number":"+447700900102"}],
                "text":"gone","reply_to":{"message_id":"W0","author":"Alice"},
                "deleted":{"at":"2026-11-20T10:05:00Z"}}"#,
        )
        .unwrap();
        let Content::WhatsApp(m) = &item.content else {
            panic!("not a WhatsApp message")
        };
        assert_eq!(m.group.as_ref().unwrap().name.as_deref(), Some("Desk"));
        assert_eq!(m.quote.as_ref().unwrap().partner_id, "W0");
        assert!(m.deleted_at.is_some());
        assert!(item.participants[1].archived && !item.participants[2].archived);
    }

    #[test]
    fn empty_message_is_rejected() {
        let e = parse(
            r#"{"message_id":"W2","type":"message","timestamp":"2026-11-20T10:00:00Z",
                "direction":"outbound","archived_number":"+447700900101","chat":{"id":"C"},
                "from":{"number":"+447700900101"},"to":[{"number":"+447700900555"}]}"#,
        )
        .unwrap_err();
        assert!(e.contains("neither text nor attachments"), "{e}");
    }
}
