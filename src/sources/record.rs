//! The vocabulary the JSON partner formats share: parties, files and calls.

use super::MediaRef;
use crate::item::{Attachment, Call, CallOutcome, Direction, Participant, Role};
use crate::mapping::{normalize_address, normalize_phone};
use chrono::{DateTime, Utc};
use phonenumber::country;
use serde::Deserialize;

/// A party of a record: a phone number, a partner address (alphanumeric sender id, SL2
/// address), a display name and an email property; each optional.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Party {
    #[serde(default)]
    pub number: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub display: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
}

impl Party {
    /// The normalized participant. A `number` that is no phone number (an alphanumeric
    /// sender id) becomes the partner address.
    pub fn participant(&self, role: Role, region: country::Id) -> Participant {
        let number = self
            .number
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty());
        let phone = number.and_then(|n| normalize_phone(n, region));
        let address = self
            .address
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .or(if phone.is_none() { number } else { None })
            .map(str::to_string);
        Participant {
            role: Some(role),
            phone,
            address,
            display_name: self.display.clone().filter(|d| !d.trim().is_empty()),
            email: self.email.as_deref().and_then(normalize_address),
            archived: false,
        }
    }
}

/// A file delivered beside the records.
#[derive(Debug, Clone, Deserialize)]
pub struct FileRef {
    /// Path relative to the day's delivery (drop), or to the API's base URL (HTTPS).
    pub file: String,
    pub content_type: String,
    #[serde(default)]
    pub name: Option<String>,
}

impl FileRef {
    pub fn media_ref(&self) -> MediaRef {
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

/// The details of a call.
#[derive(Debug, Clone, Deserialize)]
pub struct CallRecord {
    pub start: DateTime<Utc>,
    pub duration_seconds: u64,
    /// "answered", "missed", "rejected" or "voicemail".
    pub outcome: String,
    #[serde(default)]
    pub recording: Option<FileRef>,
    #[serde(default)]
    pub transcript: Option<String>,
}

impl CallRecord {
    pub fn to_call(&self, recording: Option<Attachment>) -> Result<Call, String> {
        let outcome = match self.outcome.to_ascii_lowercase().as_str() {
            "answered" => CallOutcome::Answered,
            "missed" => CallOutcome::Missed,
            "rejected" => CallOutcome::Rejected,
            "voicemail" => CallOutcome::Voicemail,
            other => return Err(format!("call outcome '{other}' is not known")),
        };
        Ok(Call {
            start: self.start,
            duration_secs: self.duration_seconds,
            outcome,
            recording,
            transcript: self.transcript.clone(),
        })
    }
}

/// "inbound" or "outbound".
pub fn direction(raw: &str) -> Result<Direction, String> {
    match raw.to_ascii_lowercase().as_str() {
        "inbound" => Ok(Direction::Inbound),
        "outbound" => Ok(Direction::Outbound),
        other => Err(format!(
            "direction '{other}' is neither inbound nor outbound"
        )),
    }
}

/// The media of a record in fetch order: attachments, then the call's recording.
pub fn media_refs(attachments: &[FileRef], call: Option<&CallRecord>) -> Vec<MediaRef> {
    attachments
        .iter()
        .chain(call.and_then(|c| c.recording.as_ref()))
        .map(FileRef::media_ref)
        .collect()
}

/// Splits fetched media back into attachments and the call's recording.
pub fn split_recording(
    mut media: Vec<Attachment>,
    call: Option<&CallRecord>,
) -> (Vec<Attachment>, Option<Attachment>) {
    let recording = match call.and_then(|c| c.recording.as_ref()) {
        Some(_) => media.pop(),
        None => None,
    };
    (media, recording)
}
