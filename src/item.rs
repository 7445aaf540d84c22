//! The normalized item: what every partner adapter produces and the renderer consumes.

/// What an item may weigh unless `archiver.max_item_bytes` says: Microsoft's connectors'
/// 10 MB rule.
pub const DEFAULT_MAX_ITEM_BYTES: u64 = 10 * 1024 * 1024;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// One communication captured by a partner archiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// The partner's own identifier, stable across re-deliveries.
    pub partner_id: String,
    /// When it was sent, received or started (UTC, as the partner stamped it).
    pub time: DateTime<Utc>,
    /// Seen from the archived employee.
    pub direction: Direction,
    /// The chat or SMS thread it belongs to, when the partner says.
    pub conversation: Option<Conversation>,
    /// Sender first, then recipients.
    pub participants: Vec<Participant>,
    pub content: Content,
}

/// Seen from the archived employee's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    Inbound,
    Outbound,
    /// Both ends are archived employees, or the partner does not say.
    Internal,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
            Direction::Internal => "internal",
        }
    }
}

/// A thread of messages: an SMS conversation, a WhatsApp chat or group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: String,
    pub name: Option<String>,
}

/// The part a participant plays in an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    From,
    To,
    Cc,
}

/// One party of an item, with whatever the partner knows of it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Participant {
    pub role: Option<Role>,
    /// E.164 (`+447700900123`) when the partner gave a valid phone number.
    pub phone: Option<String>,
    /// The partner's own address for the party when it is not a phone number
    /// (an alphanumeric sender id, an SL2 address, a WhatsApp id).
    pub address: Option<String>,
    pub display_name: Option<String>,
    /// The item's email property for this party, as the partner delivered it.
    pub email: Option<String>,
    /// True for the party whose device or number is archived (the employee).
    pub archived: bool,
}

impl Participant {
    /// The identifier a person reads in logs and status logs: an account address (an SL2
    /// address), else the phone, else any partner address, else the email.
    pub fn source_user(&self) -> String {
        let account = self.address.clone().filter(|a| a.contains('@'));
        account
            .or_else(|| self.phone.clone())
            .or_else(|| self.address.clone())
            .or_else(|| self.email.clone())
            .unwrap_or_else(|| "(unknown)".to_string())
    }
}

/// What an item carries, by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Content {
    Sms {
        text: String,
    },
    Mms {
        text: Option<String>,
        media: Vec<Attachment>,
    },
    /// A voice call on the mobile network.
    Call(Call),
    WhatsApp(WhatsAppMessage),
    WhatsAppCall(Call),
    CellTrust(CellTrustItem),
    /// A message the partner already delivers as RFC 5322 (Merge1, TeleMessage EML exports
    /// and SMTP forwarding).
    Email {
        #[serde(with = "base64_bytes")]
        raw: Vec<u8>,
        /// What the message carries when the partner says (TeleMessage's MessageType).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        carries: Option<Kind>,
    },
}

/// The kind of an item, as named in headers, subjects and status logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    #[serde(rename = "sms")]
    Sms,
    #[serde(rename = "mms")]
    Mms,
    #[serde(rename = "voice")]
    Voice,
    #[serde(rename = "whatsapp")]
    WhatsApp,
    #[serde(rename = "whatsapp-call")]
    WhatsAppCall,
    #[serde(rename = "celltrust")]
    CellTrust,
    #[serde(rename = "email")]
    Email,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sms => "sms",
            Kind::Mms => "mms",
            Kind::Voice => "voice",
            Kind::WhatsApp => "whatsapp",
            Kind::WhatsAppCall => "whatsapp-call",
            Kind::CellTrust => "celltrust",
            Kind::Email => "email",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
impl Item {
    /// An MMS sent by the archived +447700900123, with one file.
    pub fn archived_mms(
        partner_id: &str,
        time: DateTime<Utc>,
        text: Option<&str>,
        file: Attachment,
    ) -> Item {
        Item {
            partner_id: partner_id.into(),
            time,
            direction: Direction::Outbound,
            conversation: None,
            participants: vec![Participant {
                phone: Some("+447700900123".into()),
                archived: true,
                ..Participant::default()
            }],
            content: Content::Mms {
                text: text.map(str::to_string),
                media: vec![file],
            },
        }
    }
}

impl Content {
    /// Bytes of the files and raw message the item carries: the rendered message is at least
    /// this large (files are base64-encoded, 4/3 of their size).
    pub fn payload_bytes(&self) -> u64 {
        let files = |media: &[Attachment]| media.iter().map(|a| a.data.len() as u64).sum::<u64>();
        let recording = |call: &Call| call.recording.as_ref().map_or(0, |r| r.data.len() as u64);
        match self {
            Content::Sms { text } => text.len() as u64,
            Content::Mms { media, .. } => files(media),
            Content::Call(call) | Content::WhatsAppCall(call) => recording(call),
            Content::WhatsApp(m) => files(&m.media),
            Content::CellTrust(c) => files(&c.media) + c.call.as_ref().map_or(0, recording),
            Content::Email { raw, .. } => raw.len() as u64,
        }
    }

    /// The files the item carries: its media and a call's recording.
    pub fn files(&self) -> Vec<&Attachment> {
        let (media, recording): (&[Attachment], Option<&Call>) = match self {
            Content::Mms { media, .. } => (media, None),
            Content::WhatsApp(m) => (&m.media, None),
            Content::Call(call) | Content::WhatsAppCall(call) => (&[], Some(call)),
            Content::CellTrust(c) => (&c.media, c.call.as_ref()),
            Content::Sms { .. } | Content::Email { .. } => (&[], None),
        };
        media
            .iter()
            .chain(recording.and_then(|c| c.recording.as_ref()))
            .collect()
    }

    /// A copy of the content without the files in `left_out` (the very files of this
    /// content), carrying `note` in their place: in its media, or as a call's recording.
    /// None when the content carries no files to leave out.
    pub fn leaving_out(&self, left_out: &[&Attachment], note: Attachment) -> Option<Content> {
        let kept = |files: &[Attachment]| -> Vec<Attachment> {
            files
                .iter()
                .filter(|f| !left_out.iter().any(|l| std::ptr::eq(*l, *f)))
                .cloned()
                .collect()
        };
        let recording = |call: &Call| -> Call {
            let left = call
                .recording
                .as_ref()
                .is_some_and(|r| left_out.iter().any(|l| std::ptr::eq(*l, r)));
            Call {
                recording: if left { None } else { call.recording.clone() },
                ..call.clone()
            }
        };
        let mut content = match self {
            Content::Mms { text, media } => Content::Mms {
                text: text.clone(),
                media: kept(media),
            },
            Content::WhatsApp(m) => Content::WhatsApp(WhatsAppMessage {
                media: kept(&m.media),
                text: m.text.clone(),
                group: m.group.clone(),
                quote: m.quote.clone(),
                deleted_at: m.deleted_at,
            }),
            Content::Call(call) => Content::Call(recording(call)),
            Content::WhatsAppCall(call) => Content::WhatsAppCall(recording(call)),
            Content::CellTrust(c) => Content::CellTrust(CellTrustItem {
                media: kept(&c.media),
                call: c.call.as_ref().map(recording),
                channel: c.channel.clone(),
                domain: c.domain.clone(),
                organizational_unit: c.organizational_unit.clone(),
                text: c.text.clone(),
            }),
            Content::Sms { .. } | Content::Email { .. } => return None,
        };
        match &mut content {
            Content::Mms { media, .. } => media.push(note),
            Content::WhatsApp(m) => m.media.push(note),
            Content::CellTrust(c) => c.media.push(note),
            Content::Call(call) | Content::WhatsAppCall(call) => call.recording = Some(note),
            Content::Sms { .. } | Content::Email { .. } => {}
        }
        Some(content)
    }

    pub fn kind(&self) -> Kind {
        match self {
            Content::Sms { .. } => Kind::Sms,
            Content::Mms { .. } => Kind::Mms,
            Content::Call(_) => Kind::Voice,
            Content::WhatsApp(_) => Kind::WhatsApp,
            Content::WhatsAppCall(_) => Kind::WhatsAppCall,
            Content::CellTrust(_) => Kind::CellTrust,
            Content::Email { carries, .. } => carries.unwrap_or(Kind::Email),
        }
    }
}

/// A voice call (mobile network or WhatsApp).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub start: DateTime<Utc>,
    pub duration_secs: u64,
    pub outcome: CallOutcome,
    pub recording: Option<Attachment>,
    pub transcript: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallOutcome {
    Answered,
    Missed,
    Rejected,
    Voicemail,
}

impl CallOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Answered => "answered",
            CallOutcome::Missed => "missed",
            CallOutcome::Rejected => "rejected",
            CallOutcome::Voicemail => "voicemail",
        }
    }
}

/// A WhatsApp chat message, 1:1 or in a group.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WhatsAppMessage {
    pub text: Option<String>,
    /// Set for group chats.
    pub group: Option<Conversation>,
    /// The message this one replies to or quotes.
    pub quote: Option<Quote>,
    pub media: Vec<Attachment>,
    /// Set when the sender deleted the message; it is archived all the same.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A quoted or replied-to message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub partner_id: String,
    pub author: Option<String>,
    pub text: Option<String>,
}

/// A CellTrust SL2 item (person-to-person only reaches the mailbox).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellTrustItem {
    /// The SL2 channel: "sms", "mms", "voice", "chat", "whatsapp".
    pub channel: String,
    pub domain: String,
    pub organizational_unit: Option<String>,
    pub text: Option<String>,
    pub media: Vec<Attachment>,
    pub call: Option<Call>,
}

/// A file carried by an item.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
}

impl fmt::Debug for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attachment")
            .field("name", &self.name)
            .field("content_type", &self.content_type)
            .field("bytes", &self.data.len())
            .finish()
    }
}

/// Bytes as base64 text in an item kept as JSON (a held copy): files stay files, and the
/// record stays readable.
mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Written through as it is encoded (serde_json writes a `collect_str` straight into its
    /// output), so a file of an item kept whole is never in memory twice in base64.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let engine = &base64::engine::general_purpose::STANDARD;
        s.collect_str(&base64::display::Base64Display::new(bytes, engine))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// The stable identity of an item: a hash of (connector, partner item id).
///
/// Message-ID, stage paths and ledger entries derive from it, so a re-delivered item is
/// recognised however often the partner sends it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemKey(String);

impl ItemKey {
    pub fn new(connector: &str, partner_id: &str) -> Self {
        ItemKey(short_hash(&[connector, partner_id]))
    }

    /// A key read back from the ledger.
    pub fn from_hex(hex: &str) -> Self {
        ItemKey(hex.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Message-ID every copy of the item carries.
    pub fn message_id(&self) -> String {
        format!("<{}@comms-archiver.invalid>", self.0)
    }
}

impl fmt::Display for ItemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 32 hex digits (128 bits) of SHA-256 over NUL-separated parts.
pub fn short_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update([0u8]);
        }
        hasher.update(part.as_bytes());
    }
    hex(&hasher.finalize()[..16])
}

/// Full SHA-256 of bytes, as 64 hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_left_out_give_way_to_the_note_and_the_rest_stays() {
        let file = |name: &str| Attachment {
            name: name.into(),
            content_type: "audio/wav".into(),
            data: vec![1; 8],
        };
        let note = || file("note.txt");
        let call = Content::Call(Call {
            start: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            duration_secs: 60,
            outcome: CallOutcome::Answered,
            recording: Some(file("call.wav")),
            transcript: Some("hello".into()),
        });
        let files = call.files();
        let Some(Content::Call(left)) = call.leaving_out(&files, note()) else {
            panic!("a call carries its note as its recording");
        };
        assert_eq!(left.recording.unwrap().name, "note.txt");
        assert_eq!(left.transcript.as_deref(), Some("hello"));

        let chat = Content::WhatsApp(WhatsAppMessage {
            text: Some("two files".into()),
            media: vec![file("a.jpg"), file("b.jpg")],
            ..WhatsAppMessage::default()
        });
        let files = chat.files();
        let Some(Content::WhatsApp(left)) = chat.leaving_out(&files[1..], note()) else {
            panic!("a chat keeps its media");
        };
        let names: Vec<&str> = left.media.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            ["a.jpg", "note.txt"],
            "the same name elsewhere is not left out"
        );
        assert!(Content::Sms { text: "x".into() }
            .leaving_out(&[], note())
            .is_none());
    }

    #[test]
    fn item_key_is_stable_and_separates_connectors() {
        let a = ItemKey::new("o2", "O2-1");
        assert_eq!(a, ItemKey::new("o2", "O2-1"));
        assert_ne!(a, ItemKey::new("whatsapp", "O2-1"));
        // The separator keeps ("o2x", "1") apart from ("o2", "x1").
        assert_ne!(ItemKey::new("o2x", "1"), ItemKey::new("o2", "x1"));
        assert_eq!(a.as_str().len(), 32);
        assert!(a.message_id().starts_with('<') && a.message_id().ends_with('>'));
    }
}
