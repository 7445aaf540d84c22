//! Items the partner already delivers as RFC 5322 messages: Veritas Merge1 (CellTrust
//! through Merge1) and TeleMessage's EML exports. The message is imported unchanged apart
//! from our tracking headers; participants come from From/To/Cc, whose addresses are the
//! items' email property. Contracts: `docs/partners/merge1.md`, `docs/partners/telemessage.md`.

use super::{Decoded, MediaRef, RecordFormat, Wire};
use crate::item::{Attachment, Content, Direction, Item, Participant, Role};
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
    pub raw: Vec<u8>,
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
        Ok(EmlRecord {
            id,
            time,
            participants,
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
            conversation: None,
            participants: record.participants,
            content: Content::Email { raw: record.raw },
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
        assert_eq!(item.content, Content::Email { raw: TM.to_vec() });
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
