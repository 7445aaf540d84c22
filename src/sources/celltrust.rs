//! CellTrust SL2 records. One SL2 domain per organisation, with optional organizational
//! units; each unit is enabled separately (enabling the domain does not enable its units).
//! Only person-to-person (P2P) items are archived: application-to-person (A2P) items and
//! items of units that are not enabled are counted and listed as excluded.
//! Contract: `docs/partners/celltrust.md`.

use super::partner::{AuthKind, Building, Descriptor, Transport};
use super::record::{direction, media_refs, split_recording, CallRecord, FileRef, Party};
use super::{decode_json, Decoded, MediaRef, RecordFormat, Source, Wire};
use crate::checks::Invalid;
use crate::item::{Attachment, CellTrustItem, Content, Conversation, Item, Role};
use crate::mapping::normalize_address;
use chrono::{DateTime, Utc};
use phonenumber::country;
use serde::Deserialize;

/// CellTrust SL2, direct.
pub const PARTNER: Descriptor = Descriptor {
    name: "celltrust-sl2",
    default_folder: "CellTrust SL2",
    invalid_domain: "celltrust.invalid",
    vendor: "celltrust",
    feed: "",
    auth: AuthKind::ClientCredentials,
    transports: &[Transport::Drop, Transport::Https],
    celltrust_table: true,
    email: None,
    build,
};

fn build(building: &Building<'_>) -> crate::Result<Box<dyn Source>> {
    let settings = building
        .connector
        .celltrust
        .as_ref()
        .ok_or_else(|| crate::Error::Usage("celltrust-sl2 needs its celltrust table".into()))?;
    let scope = settings.scope();
    let access = super::https::Sl2Access {
        environment: settings.environment.as_str().to_string(),
        scope: scope.clone(),
    };
    let format = Sl2Format {
        region: building.region,
        scope,
    };
    building.source(format, Some(access))
}

/// CellTrust SL2 settings: the environment and which parts of the domain to archive.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellTrustConfig {
    /// "azure-global" or "azure-government": where the SL2 domain is hosted.
    pub environment: Sl2Environment,
    /// The SL2 domain.
    pub domain: String,
    /// Archive the domain's own users (those in no organizational unit). Default true.
    #[serde(default = "enabled")]
    pub enable_domain: bool,
    /// Organizational units to archive, each enabled by name: enabling the domain does not
    /// enable its units.
    #[serde(default)]
    pub enable_units: Vec<String>,
}

/// Where a CellTrust SL2 domain is hosted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sl2Environment {
    AzureGlobal,
    AzureGovernment,
}

impl Sl2Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Sl2Environment::AzureGlobal => "azure-global",
            Sl2Environment::AzureGovernment => "azure-government",
        }
    }
}

fn enabled() -> bool {
    true
}

impl CellTrustConfig {
    /// Checks something of the domain is enabled.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !self.enable_domain && self.enable_units.is_empty() {
            return Err(Invalid::new(
                "",
                "nothing is enabled: set enable_domain = true or list enable_units",
            ));
        }
        Ok(())
    }

    /// The parts of the domain these settings enable.
    pub fn scope(&self) -> Sl2Scope {
        Sl2Scope {
            domain: self.domain.clone(),
            enable_domain: self.enable_domain,
            units: self.enable_units.clone(),
        }
    }
}

/// One SL2 record.
#[derive(Debug, Clone, Deserialize)]
pub struct Sl2Record {
    pub id: String,
    pub timestamp: DateTime<Utc>,
    /// "P2P" or "A2P".
    pub source_type: String,
    /// "sms", "mms", "voice", "chat" or "whatsapp".
    pub channel: String,
    pub domain: String,
    #[serde(default)]
    pub organizational_unit: Option<String>,
    pub direction: String,
    /// The SL2 user's address: the archived employee.
    pub sl2_user: String,
    #[serde(default)]
    pub conversation_id: Option<String>,
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

/// Which parts of the SL2 domain this connector archives.
#[derive(Debug, Clone)]
pub struct Sl2Scope {
    pub domain: String,
    /// The domain's own users (those in no unit).
    pub enable_domain: bool,
    /// Organizational units enabled one by one.
    pub units: Vec<String>,
}

impl Sl2Scope {
    /// Whether a unit (None: the domain itself) is enabled.
    pub fn enables(&self, unit: Option<&str>) -> bool {
        match unit {
            None => self.enable_domain,
            Some(u) => self.units.iter().any(|x| x.eq_ignore_ascii_case(u)),
        }
    }
}

/// The SL2 record format.
#[derive(Debug, Clone)]
pub struct Sl2Format {
    pub region: country::Id,
    pub scope: Sl2Scope,
}

impl RecordFormat for Sl2Format {
    type Record = Sl2Record;
    const WIRE: Wire = Wire::Json;

    fn decode(&self, bytes: &[u8]) -> Result<Sl2Record, String> {
        decode_json(bytes)
    }

    fn partner_id(record: &Sl2Record) -> String {
        record.id.clone()
    }

    fn media(record: &Sl2Record) -> Vec<MediaRef> {
        media_refs(&record.attachments, record.call.as_ref())
    }

    fn to_item(&self, record: Sl2Record, media: Vec<Attachment>) -> Result<Decoded, String> {
        if !record.domain.eq_ignore_ascii_case(&self.scope.domain) {
            return Err(format!(
                "the record is for SL2 domain '{}', the connector for '{}'",
                record.domain, self.scope.domain
            ));
        }
        let unit = record
            .organizational_unit
            .as_deref()
            .filter(|u| !u.is_empty());
        if !self.scope.enables(unit) {
            return Ok(Decoded::Excluded {
                reason: "unit_not_enabled".into(),
                detail: match unit {
                    Some(u) => {
                        format!("organizational unit '{u}' is not enabled on this connector")
                    }
                    None => format!(
                        "domain '{}' itself is not enabled on this connector",
                        record.domain
                    ),
                },
            });
        }
        match record.source_type.to_ascii_uppercase().as_str() {
            "P2P" => {}
            "A2P" => {
                let sender = record
                    .from
                    .address
                    .clone()
                    .or(record.from.number.clone())
                    .unwrap_or_default();
                return Ok(Decoded::Excluded {
                    reason: "a2p".into(),
                    detail: format!(
                        "application-to-person {} from {sender}: only person-to-person items are archived",
                        record.channel
                    ),
                });
            }
            other => return Err(format!("source_type '{other}' is neither P2P nor A2P")),
        }
        self.item(record, media)
            .map(|item| Decoded::Item(Box::new(item)))
    }
}

impl Sl2Format {
    fn item(&self, record: Sl2Record, media: Vec<Attachment>) -> Result<Item, String> {
        let sl2_user = normalize_address(&record.sl2_user)
            .ok_or_else(|| format!("sl2_user '{}' is not an address", record.sl2_user))?;
        let direction = direction(&record.direction)?;
        if record.to.is_empty() {
            return Err("the record has no recipient ('to' is empty)".to_string());
        }
        let party = |p: &Party, role| {
            let mut participant = p.participant(role, self.region);
            // SL2 users are known by their SL2 address, which is their email.
            if participant.email.is_none() {
                participant.email = participant.address.as_deref().and_then(normalize_address);
            }
            participant.archived = participant.email.as_deref() == Some(sl2_user.as_str());
            participant
        };
        let mut participants = vec![party(&record.from, Role::From)];
        participants.extend(record.to.iter().map(|p| party(p, Role::To)));
        if !participants.iter().any(|p| p.archived) {
            return Err(format!(
                "sl2_user {sl2_user} is neither the sender nor a recipient"
            ));
        }
        let (media, recording) = split_recording(media, record.call.as_ref());
        let call = match (&record.call, record.channel.eq_ignore_ascii_case("voice")) {
            (Some(call), _) => Some(call.to_call(recording)?),
            (None, true) => return Err("a voice record has no 'call' details".into()),
            (None, false) => None,
        };
        if call.is_none() && record.text.is_none() && media.is_empty() {
            return Err("the record has neither text, attachments nor call details".into());
        }
        Ok(Item {
            partner_id: record.id,
            time: record.timestamp,
            direction,
            conversation: record
                .conversation_id
                .map(|id| Conversation { id, name: None }),
            participants,
            content: Content::CellTrust(CellTrustItem {
                channel: record.channel.to_ascii_lowercase(),
                domain: record.domain,
                organizational_unit: record.organizational_unit,
                text: record.text,
                media,
                call,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format() -> Sl2Format {
        Sl2Format {
            region: country::Id::US,
            scope: Sl2Scope {
                domain: "contoso".into(),
                enable_domain: true,
                units: vec!["Trading".into()],
            },
        }
    }

    fn record(extra: &str) -> Vec<u8> {
        format!(
            r#"{{"id":"S1","timestamp":"2026-11-20T10:00:00Z","source_type":"P2P","channel":"sms",
                "domain":"contoso","direction":"outbound","sl2_user":"alice@contoso.com",
                "from":{{"address":"alice@contoso.com","number":"+12025550101"}},
                "to":[{{"number":"+12025550199"}}],"text":"hi"{extra}}}"#
        )
        .into_bytes()
    }

    fn decode(bytes: &[u8]) -> Result<Decoded, String> {
        let f = format();
        let r = f.decode(bytes)?;
        f.to_item(r, Vec::new())
    }

    #[test]
    fn p2p_items_map_by_sl2_address() {
        let Decoded::Item(item) = decode(&record("")).unwrap() else {
            panic!("excluded")
        };
        assert_eq!(
            item.participants[0].email.as_deref(),
            Some("alice@contoso.com")
        );
        assert!(item.participants[0].archived);
    }

    #[test]
    fn a2p_and_disabled_units_are_excluded() {
        let a2p = String::from_utf8(record(""))
            .unwrap()
            .replace("\"P2P\"", "\"A2P\"");
        let Decoded::Excluded { reason, .. } = decode(a2p.as_bytes()).unwrap() else {
            panic!("imported an A2P item")
        };
        assert_eq!(reason, "a2p");
        let Decoded::Excluded { reason, detail } =
            decode(&record(r#","organizational_unit":"Compliance""#)).unwrap()
        else {
            panic!("imported an item of a unit that is not enabled")
        };
        assert_eq!(reason, "unit_not_enabled");
        assert!(detail.contains("'Compliance'"));
        assert!(matches!(
            decode(&record(r#","organizational_unit":"trading""#)).unwrap(),
            Decoded::Item(_)
        ));
    }
}
