//! Items the partner already delivers as RFC 5322 messages: Veritas Merge1 (CellTrust
//! through Merge1) and TeleMessage's EML exports. The message is imported unchanged apart
//! from our tracking headers; participants come from From/To/Cc, whose addresses are the
//! items' email property. Contracts: `docs/partners/merge1.md`, `docs/partners/telemessage.md`.

use super::{Decoded, MediaRef, RecordFormat, Wire};
use crate::item::{Attachment, Content, Conversation, Direction, Item, Kind, Participant, Role};
use crate::mapping::{normalize_address, normalize_phone};
use crate::message_bytes::field;
use chrono::{DateTime, Utc};
use mail_parser::{Address, MessageParser};
use phonenumber::country;

/// Whose messages these are: it decides where the id and the archived party come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmlFlavor {
    /// Veritas Merge1: the id is the Message-ID.
    Merge1,
    /// TeleMessage: the id is X-TELEMESSAGE-ArchiveMessageID and the archived employee is
    /// X-TELEMESSAGE-ArchiveInitiator.
    TeleMessage,
}

/// A message read far enough to file it.
#[derive(Debug, Clone)]
pub struct EmlRecord {
    pub id: String,
    pub time: DateTime<Utc>,
    pub participants: Vec<Participant>,
    /// TeleMessage's thread or group, when the message names one.
    pub conversation: Option<Conversation>,
    /// What TeleMessage's MessageType says the message carries.
    pub carries: Option<Kind>,
    /// The message itself: for a journal envelope, the original it carries.
    pub raw: Vec<u8>,
}

/// The message a journal envelope carries, when `raw` is one: a message with the
/// X-MS-Journal-Report field (Exchange's journal report) or, from TeleMessage, one without
/// X-TELEMESSAGE-ArchiveMessageID whose attached message/rfc822 part has it. None when
/// `raw` is the message itself.
pub fn unwrap_journal(raw: &[u8], flavor: EmlFlavor) -> Result<Option<Vec<u8>>, String> {
    let journal = field(raw, "X-MS-Journal-Report").is_some();
    let maybe_telemessage = flavor == EmlFlavor::TeleMessage
        && field(raw, "X-TELEMESSAGE-ArchiveMessageID").is_none()
        && field(raw, "Content-Type").is_some_and(|t| {
            t.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/")
        });
    if !journal && !maybe_telemessage {
        return Ok(None);
    }
    let message = MessageParser::default()
        .parse(raw)
        .ok_or("the journal envelope is not an RFC 5322 message")?;
    // A message carried as it is (7bit, 8bit, binary) is the part's body exactly, up to the
    // CRLF that belongs to the next boundary (RFC 2046 5.1.1); one carried in base64 or
    // quoted-printable is what that decodes to.
    let inner = message.parts.iter().find_map(|part| match &part.body {
        mail_parser::PartType::Message(inner) => Some(match part.encoding {
            mail_parser::Encoding::None => raw
                .get(part.offset_body as usize..part.offset_end as usize)?
                .to_vec(),
            _ => inner.raw_message.to_vec(),
        }),
        _ => None,
    });
    match (inner, journal) {
        (Some(inner), true) => Ok(Some(inner)),
        (Some(inner), false) if field(&inner, "X-TELEMESSAGE-ArchiveMessageID").is_some() => {
            Ok(Some(inner))
        }
        (None, true) => Err("the journal envelope carries no message/rfc822 part".into()),
        _ => Ok(None),
    }
}

/// TeleMessage's MessageType, read leniently: the names seen are "SMS", "MMS", "Voice",
/// "Call", "WhatsApp", "WhatsApp Call"; anything else is carried as an email.
fn carried_kind(message_type: &str) -> Option<Kind> {
    let t = message_type.to_ascii_lowercase();
    let call = t.contains("call") || t.contains("voice");
    Some(match () {
        _ if t.contains("whatsapp") && call => Kind::WhatsAppCall,
        _ if t.contains("whatsapp") => Kind::WhatsApp,
        _ if t.contains("mms") => Kind::Mms,
        _ if call => Kind::Voice,
        _ if t.contains("sms") => Kind::Sms,
        _ => return None,
    })
}

/// TeleMessage's thread: THREAD_ID (named by ThreadName) or, for a group, GroupID (named by
/// GROUP_NAME).
fn telemessage_thread(raw: &[u8]) -> Option<Conversation> {
    let nonempty = |name: &str| field(raw, name).filter(|v| !v.is_empty());
    let group = nonempty("X-TELEMESSAGE-GroupID").map(|id| Conversation {
        id,
        name: nonempty("X-TELEMESSAGE-GROUP_NAME"),
    });
    group.or_else(|| {
        nonempty("X-TELEMESSAGE-THREAD_ID").map(|id| Conversation {
            id,
            name: nonempty("X-TELEMESSAGE-ThreadName"),
        })
    })
}

/// The EML record format.
#[derive(Debug, Clone, Copy)]
pub struct EmlFormat {
    pub flavor: EmlFlavor,
    pub region: country::Id,
}

impl RecordFormat for EmlFormat {
    type Record = EmlRecord;
    const WIRE: Wire = Wire::Mime;

    fn decode(&self, bytes: &[u8]) -> Result<EmlRecord, String> {
        let unwrapped = unwrap_journal(bytes, self.flavor)?;
        let bytes = unwrapped.as_deref().unwrap_or(bytes);
        let message = MessageParser::default()
            .parse_headers(bytes)
            .ok_or("not an RFC 5322 message")?;
        let id = match self.flavor {
            EmlFlavor::Merge1 => message.message_id().map(str::to_string),
            EmlFlavor::TeleMessage => field(bytes, "X-TELEMESSAGE-ArchiveMessageID")
                .or_else(|| message.message_id().map(str::to_string)),
        }
        .filter(|id| !id.trim().is_empty())
        .ok_or("the message has no id (Message-ID, or X-TELEMESSAGE-ArchiveMessageID)")?;
        let time = message
            .date()
            .and_then(|d| DateTime::from_timestamp(d.to_timestamp(), 0))
            .ok_or("the message has no valid Date")?;
        let mut participants = Vec::new();
        for (role, address) in [
            (Role::From, message.from()),
            (Role::To, message.to()),
            (Role::Cc, message.cc()),
        ] {
            participants.extend(parties(address, role, self.region));
        }
        if participants.is_empty() {
            return Err("the message names no participant in From, To or Cc".into());
        }
        if self.flavor == EmlFlavor::TeleMessage {
            let initiator = field(bytes, "X-TELEMESSAGE-ArchiveInitiator")
                .ok_or("the message has no X-TELEMESSAGE-ArchiveInitiator")?;
            let phone = normalize_phone(&initiator, self.region);
            let email = normalize_address(&initiator);
            let mut found = false;
            for p in &mut participants {
                if (phone.is_some() && p.phone == phone) || (email.is_some() && p.email == email) {
                    p.archived = true;
                    found = true;
                }
            }
            if !found {
                return Err(format!(
                    "X-TELEMESSAGE-ArchiveInitiator {initiator} is neither the sender nor a recipient"
                ));
            }
        }
        let (conversation, carries) = match self.flavor {
            EmlFlavor::TeleMessage => (
                telemessage_thread(bytes),
                field(bytes, "X-TELEMESSAGE-MessageType").and_then(|t| carried_kind(&t)),
            ),
            EmlFlavor::Merge1 => (None, None),
        };
        Ok(EmlRecord {
            id,
            time,
            participants,
            conversation,
            carries,
            raw: bytes.to_vec(),
        })
    }

    fn partner_id(record: &EmlRecord) -> String {
        record.id.clone()
    }

    fn media(_: &EmlRecord) -> Vec<MediaRef> {
        Vec::new()
    }

    fn to_item(&self, record: EmlRecord, _: Vec<Attachment>) -> Result<Decoded, String> {
        let direction = match record.participants.iter().position(|p| p.archived) {
            Some(0) => Direction::Outbound,
            Some(_) => Direction::Inbound,
            None => Direction::Internal,
        };
        Ok(Decoded::Item(Box::new(Item {
            partner_id: record.id,
            time: record.time,
            direction,
            conversation: record.conversation,
            participants: record.participants,
            content: Content::Email {
                raw: record.raw,
                carries: record.carries,
            },
        })))
    }
}

/// The participants of one address header. A display name that is a bare number
/// ("447786910895", as TeleMessage writes them) is taken as the phone number.
fn parties(address: Option<&Address<'_>>, role: Role, region: country::Id) -> Vec<Participant> {
    let Some(address) = address else {
        return Vec::new();
    };
    address
        .iter()
        .map(|addr| {
            let name = addr.name().map(str::trim).filter(|n| !n.is_empty());
            let digits = name.filter(|n| {
                n.trim_start_matches('+')
                    .chars()
                    .all(|c| c.is_ascii_digit())
            });
            let phone = digits
                .and_then(|d| normalize_phone(&format!("+{}", d.trim_start_matches('+')), region));
            Participant {
                role: Some(role),
                phone,
                address: None,
                display_name: name.map(str::to_string),
                email: addr.address().and_then(normalize_address),
                archived: false,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TM: &[u8] = b"From: \"447700900101\" <alice.smith@contoso.com>\r\n\
To: \"447700900555\" <447700900555@telemessage.example>\r\n\
Date: Fri, 20 Nov 2026 08:02:11 +0000\r\n\
Message-ID: <tm-1@telemessage.example>\r\n\
x-telemessage-archivemessageid: TM-123\r\n\
X-TELEMESSAGE-ArchiveInitiator: 447700900101\r\n\
Subject: SMS\r\n\r\nhello\r\n";

    #[test]
    fn telemessage_eml_uses_its_archive_headers() {
        let f = EmlFormat {
            flavor: EmlFlavor::TeleMessage,
            region: country::Id::GB,
        };
        let r = f.decode(TM).unwrap();
        assert_eq!(r.id, "TM-123");
        assert_eq!(r.participants[0].phone.as_deref(), Some("+447700900101"));
        assert!(r.participants[0].archived);
        let Decoded::Item(item) = f.to_item(r, Vec::new()).unwrap() else {
            panic!()
        };
        assert_eq!(item.direction, Direction::Outbound);
        assert_eq!(
            item.content,
            Content::Email {
                raw: TM.to_vec(),
                carries: None
            }
        );
    }

    fn telemessage() -> EmlFormat {
        EmlFormat {
            flavor: EmlFlavor::TeleMessage,
            region: country::Id::GB,
        }
    }

    #[test]
    fn telemessage_threads_and_kinds_are_read_case_insensitively() {
        let threaded = String::from_utf8_lossy(TM).replace(
            "Subject: SMS\r\n",
            "Subject: SMS\r\nX-TeleMessage-Thread_ID: T-9\r\nx-telemessage-threadname: Desk\r\n\
             X-TELEMESSAGE-MessageType: WhatsApp Call\r\n",
        );
        let r = telemessage().decode(threaded.as_bytes()).unwrap();
        assert_eq!(
            r.conversation,
            Some(Conversation {
                id: "T-9".into(),
                name: Some("Desk".into())
            })
        );
        assert_eq!(r.carries, Some(Kind::WhatsAppCall));
        let grouped = threaded.replace(
            "X-TeleMessage-Thread_ID: T-9",
            "X-TELEMESSAGE-GroupID: G-1\r\nX-TELEMESSAGE-GROUP_NAME: Clients",
        );
        let r = telemessage().decode(grouped.as_bytes()).unwrap();
        assert_eq!(r.conversation.unwrap().id, "G-1");
        assert_eq!(carried_kind("SMS"), Some(Kind::Sms));
        assert_eq!(carried_kind("Voice"), Some(Kind::Voice));
        assert_eq!(carried_kind("Fax"), None);
    }

    /// A journal envelope as Exchange writes one: a report part and the original attached.
    fn envelope(original: &[u8], journal_field: bool) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(
            b"From: journal@telemessage.example\r\nTo: o2-archive@archive.example\r\n",
        );
        if journal_field {
            out.extend_from_slice(b"X-MS-Journal-Report:\r\n");
        }
        out.extend_from_slice(
            b"Subject: SMS\r\nDate: Fri, 20 Nov 2026 08:02:12 +0000\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"J\"\r\n\r\n--J\r\nContent-Type: text/plain\r\n\r\n\
Sender: alice.smith@contoso.com\r\nMessage-Id: <tm-1@telemessage.example>\r\n\r\n--J\r\n\
Content-Type: message/rfc822\r\n\r\n",
        );
        out.extend_from_slice(original);
        // The CRLF before a boundary belongs to the boundary.
        out.extend_from_slice(b"\r\n--J--\r\n");
        out
    }

    #[test]
    fn a_journal_envelope_is_unwrapped_to_the_original_it_carries() {
        for journal_field in [true, false] {
            let r = telemessage().decode(&envelope(TM, journal_field)).unwrap();
            assert_eq!(r.id, "TM-123");
            assert_eq!(r.raw, TM, "the original, byte for byte ({journal_field})");
        }
        // Merge1 unwraps only what says it is a journal report.
        let merge1 = EmlFormat {
            flavor: EmlFlavor::Merge1,
            region: country::Id::GB,
        };
        assert_eq!(
            merge1.decode(&envelope(TM, true)).unwrap().id,
            "tm-1@telemessage.example"
        );
        let empty =
            String::from_utf8_lossy(&envelope(b"", true)).replace("message/rfc822", "text/plain");
        assert!(telemessage()
            .decode(empty.as_bytes())
            .unwrap_err()
            .contains("no message/rfc822"));
    }

    #[test]
    fn merge1_uses_the_message_id_and_needs_a_date() {
        let f = EmlFormat {
            flavor: EmlFlavor::Merge1,
            region: country::Id::US,
        };
        assert_eq!(f.decode(TM).unwrap().id, "tm-1@telemessage.example");
        let undated =
            String::from_utf8_lossy(TM).replace("Date: Fri, 20 Nov 2026 08:02:11 +0000\r\n", "");
        assert!(f.decode(undated.as_bytes()).unwrap_err().contains("Date"));
    }
}
