//! TeleMessage O2 Network Archiver records: SMS, MMS and voice calls of corporate O2 numbers.
//!
//! The contract is written down in `docs/partners/telemessage.md`. Field names follow the
//! names TeleMessage uses in its own message headers (ArchiveMessageID, MessageType,
//! ArchiveInitiator, THREAD_ID, ThreadName, Network), in snake case. Times are UTC.

use super::{MediaRef, RecordFormat};
use crate::item::{
    Attachment, Call, CallOutcome, Content, Conversation, Direction, Item, Participant, Role,
};
use crate::mapping::{normalize_address, normalize_phone};
use chrono::{DateTime, Utc};
use phonenumber::country;
use serde::Deserialize;

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
    pub from: O2Party,
    #[serde(default)]
    pub to: Vec<O2Party>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub attachments: Vec<O2File>,
    #[serde(default)]
    pub call: Option<O2Call>,
}

/// A party: a number (or alphanumeric sender id), a display name, and an email property.
#[derive(Debug, Clone, Deserialize)]
pub struct O2Party {
    pub number: String,
    #[serde(default)]
    pub display: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
}

/// A file delivered beside the records.
#[derive(Debug, Clone, Deserialize)]
pub struct O2File {
    /// Path relative to the day's delivery (drop) or URL (HTTPS).
    pub file: String,
    pub content_type: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// Call details of a CALL record.
#[derive(Debug, Clone, Deserialize)]
pub struct O2Call {
    pub start: DateTime<Utc>,
    pub duration_seconds: u64,
    /// "answered", "missed", "rejected" or "voicemail".
    pub outcome: String,
    #[serde(default)]
    pub recording: Option<O2File>,
    #[serde(default)]
    pub transcript: Option<String>,
}

/// The O2 record format, with the region for numbers written without a country code.
#[derive(Debug, Clone, Copy)]
pub struct O2Format {
    pub region: country::Id,
}

impl O2File {
    fn media_ref(&self) -> MediaRef {
        let name = self.name.clone().unwrap_or_else(|| {
            self.file
                .rsplit('/')
                .next()
                .unwrap_or(&self.file)
                .to_string()
        });
        MediaRef {
            location: self.file.clone(),
            name,
            content_type: self.content_type.clone(),
        }
    }
}

impl O2Format {
    fn participant(&self, party: &O2Party, role: Role, initiator: Option<&str>) -> Participant {
        let phone = normalize_phone(&party.number, self.region);
        let address = match phone {
            Some(_) => None,
            None => Some(party.number.trim().to_string()).filter(|a| !a.is_empty()),
        };
        let archived = phone.is_some() && phone.as_deref() == initiator;
        Participant {
            role: Some(role),
            phone,
            address,
            display_name: party.display.clone().filter(|d| !d.trim().is_empty()),
            email: party.email.as_deref().and_then(normalize_address),
            archived,
        }
    }
}

impl RecordFormat for O2Format {
    type Record = O2Record;

    fn partner_id(record: &O2Record) -> &str {
        &record.archive_message_id
    }

    fn media(record: &O2Record) -> Vec<MediaRef> {
        record
            .attachments
            .iter()
            .chain(record.call.as_ref().and_then(|c| c.recording.as_ref()))
            .map(O2File::media_ref)
            .collect()
    }

    fn to_item(&self, record: O2Record, mut media: Vec<Attachment>) -> Result<Item, String> {
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
        let direction = match record.direction.to_ascii_lowercase().as_str() {
            "inbound" => Direction::Inbound,
            "outbound" => Direction::Outbound,
            other => {
                return Err(format!(
                    "direction '{other}' is neither inbound nor outbound"
                ))
            }
        };
        if record.to.is_empty() {
            return Err("the record has no recipient ('to' is empty)".to_string());
        }
        let mut participants = vec![self.participant(&record.from, Role::From, Some(&initiator))];
        participants.extend(
            record
                .to
                .iter()
                .map(|p| self.participant(p, Role::To, Some(&initiator))),
        );
        if !participants.iter().any(|p| p.archived) {
            return Err(format!(
                "archive_initiator {initiator} is neither the sender nor a recipient"
            ));
        }

        let recording = match record.call.as_ref().and_then(|c| c.recording.as_ref()) {
            // The recording is fetched last, after the attachments.
            Some(_) => media.pop(),
            None => None,
        };
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
            "CALL" => {
                let call = record
                    .call
                    .ok_or("a CALL record has no 'call' details".to_string())?;
                let outcome = match call.outcome.to_ascii_lowercase().as_str() {
                    "answered" => CallOutcome::Answered,
                    "missed" => CallOutcome::Missed,
                    "rejected" => CallOutcome::Rejected,
                    "voicemail" => CallOutcome::Voicemail,
                    other => return Err(format!("call outcome '{other}' is not known")),
                };
                Content::Call(Call {
                    start: call.start,
                    duration_secs: call.duration_seconds,
                    outcome,
                    recording,
                    transcript: call.transcript,
                })
            }
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
        .to_item(record, media)
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
