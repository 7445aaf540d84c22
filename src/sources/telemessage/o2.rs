//! TeleMessage O2 Network Archiver records: SMS, MMS and voice calls of corporate O2 numbers.
//!
//! The contract is written down in `docs/partners/telemessage.md`. Field names follow the
//! names TeleMessage uses in its own message headers (ArchiveMessageID, MessageType,
//! ArchiveInitiator, THREAD_ID, ThreadName, Network), in snake case. Times are UTC.

use super::archived_by;
use crate::item::{Attachment, Content, Conversation, Item, Role};
use crate::mapping::normalize_phone;
use crate::sources::partner::{AuthKind, Building, Descriptor, Transport};
use crate::sources::record::{direction, media_refs, split_recording, CallRecord, FileRef, Party};
use crate::sources::{decode_json, Decoded, MediaRef, RecordFormat, Wire};
use chrono::{DateTime, Utc};
use phonenumber::country;
use serde::Deserialize;

/// TeleMessage O2 Network Archiver: SMS, MMS and voice calls of corporate O2 numbers.
pub const PARTNER: Descriptor = Descriptor {
    name: "telemessage-o2",
    default_folder: "O2 SMS and Voice Network Archiver",
    invalid_domain: "telemessage.invalid",
    vendor: "telemessage",
    feed: "o2/items",
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
            O2Format {
                region: building.region,
            },
            None,
        )
    },
};

/// One O2 record as TeleMessage delivers it.
#[derive(Debug, Clone, Deserialize)]
pub struct O2Record {
    pub archive_message_id: String,
    /// "SMS", "MMS" or "CALL".
    pub message_type: String,
    pub timestamp: DateTime<Utc>,
    /// "inbound" or "outbound", seen from the archived subscriber.
    pub direction: String,
    /// The archived subscriber's number (the employee's corporate O2 line).
    pub archive_initiator: String,
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub thread_id: Option<String>,
    #[serde(default)]
    pub thread_name: Option<String>,
    pub from: Party,
    #[serde(default)]
    pub to: Vec<Party>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub attachments: Vec<FileRef>,
    #[serde(default)]
    pub call: Option<CallRecord>,
}

/// The O2 record format, with the region for numbers written without a country code.
#[derive(Debug, Clone, Copy)]
pub struct O2Format {
    pub region: country::Id,
}

impl RecordFormat for O2Format {
    type Record = O2Record;
    const WIRE: Wire = Wire::Json;

    fn decode(&self, bytes: &[u8]) -> Result<O2Record, String> {
        decode_json(bytes)
    }

    fn partner_id(record: &O2Record) -> String {
        record.archive_message_id.clone()
    }

    fn media(record: &O2Record) -> Vec<MediaRef> {
        media_refs(&record.attachments, record.call.as_ref())
    }

    fn to_item(&self, record: O2Record, media: Vec<Attachment>) -> Result<Decoded, String> {
        self.item(record, media)
            .map(|item| Decoded::Item(Box::new(item)))
    }
}

impl O2Format {
    fn item(&self, record: O2Record, media: Vec<Attachment>) -> Result<Item, String> {
        if record.archive_message_id.trim().is_empty() {
            return Err("archive_message_id is empty".to_string());
        }
        if let Some(network) = &record.network {
            if !network.eq_ignore_ascii_case("O2") {
                return Err(format!("network '{network}' is not O2"));
            }
        }
        let initiator =
            normalize_phone(&record.archive_initiator, self.region).ok_or_else(|| {
                format!(
                    "archive_initiator '{}' is not a phone number",
                    record.archive_initiator
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
        archived_by(&mut participants, &initiator, "archive_initiator")?;

        let (media, recording) = split_recording(media, record.call.as_ref());
        let content = match record.message_type.to_ascii_uppercase().as_str() {
            "SMS" => Content::Sms {
                text: record
                    .text
                    .ok_or("an SMS record has no 'text'".to_string())?,
            },
            "MMS" => Content::Mms {
                text: record.text,
                media,
            },
            "CALL" => Content::Call(
                record
                    .call
                    .ok_or("a CALL record has no 'call' details".to_string())?
                    .to_call(recording)?,
            ),
            other => {
                return Err(format!(
                    "message_type '{other}' is not one of SMS, MMS, CALL"
                ))
            }
        };
        let conversation = record.thread_id.map(|id| Conversation {
            id,
            name: record.thread_name,
        });
        Ok(Item {
            partner_id: record.archive_message_id,
            time: record.timestamp,
            direction,
            conversation,
            participants,
            content,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::CallOutcome;

    fn parse(json: &str) -> Result<Item, String> {
        let record: O2Record = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let media = O2Format::media(&record)
            .into_iter()
            .map(|m| Attachment {
                name: m.name,
                content_type: m.content_type,
                data: vec![0; 4],
            })
            .collect();
        O2Format {
            region: country::Id::GB,
        }
        .item(record, media)
    }

    #[test]
    fn sms_record() {
        let item = parse(
            r#"{"archive_message_id":"A1","message_type":"SMS","timestamp":"2026-11-20T08:00:00Z",
                "direction":"outbound","archive_initiator":"07700 900101","network":"O2",
                "from":{"number":"+447700900101","display":"Alice Smith"},
                "to":[{"number":"HSBC"}],"text":"hi"}"#,
        )
        .unwrap();
        assert_eq!(item.participants[0].phone.as_deref(), Some("+447700900101"));
        assert!(item.participants[0].archived);
        assert_eq!(item.participants[1].address.as_deref(), Some("HSBC"));
        assert!(!item.participants[1].archived);
        assert_eq!(item.content, Content::Sms { text: "hi".into() });
    }

    #[test]
    fn call_record_with_recording() {
        let item = parse(
            r#"{"archive_message_id":"C1","message_type":"CALL","timestamp":"2026-11-20T09:00:00Z",
                "direction":"inbound","archive_initiator":"+447700900101",
                "from":{"number":"+447700900555"},"to":[{"number":"+447700900101"}],
                "call":{"start":"2026-11-20T09:00:00Z","duration_seconds":61,"outcome":"answered",
                        "recording":{"file":"media/c1.wav","content_type":"audio/wav"}}}"#,
        )
        .unwrap();
        let Content::Call(call) = item.content else {
            panic!("not a call")
        };
        assert_eq!(call.recording.unwrap().name, "c1.wav");
        assert_eq!(call.outcome, CallOutcome::Answered);
    }

    #[test]
    fn bad_records_say_what_is_wrong() {
        let base = r#"{"archive_message_id":"X","message_type":"SMS","timestamp":"2026-11-20T08:00:00Z",
            "direction":"sideways","archive_initiator":"+447700900101",
            "from":{"number":"+447700900101"},"to":[{"number":"+447700900555"}],"text":"t"}"#;
        assert!(parse(base).unwrap_err().contains("direction 'sideways'"));
        let no_text = base
            .replace("sideways", "outbound")
            .replace(r#","text":"t""#, "");
        assert!(parse(&no_text).unwrap_err().contains("no 'text'"));
        let stranger = base.replace("sideways", "outbound").replace(
            "\"archive_initiator\":\"+447700900101\"",
            "\"archive_initiator\":\"+447700900999\"",
        );
        assert!(parse(&stranger)
            .unwrap_err()
            .contains("neither the sender nor a recipient"));
    }
}
