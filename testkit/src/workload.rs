//! A synthetic business day for benchmarks and chaos runs: `items` partner records spread over
//! the day for `mailboxes` employees, in the mix a mobile-archiving customer sees.
//!
//! - 65% SMS (TeleMessage O2)
//! - 25% WhatsApp messages (TeleMessage WhatsApp), 10% of them with media of 20 KB to 2 MB
//! - 8% voice calls (TeleMessage O2), 20% of them with a recording
//! - 2% CellTrust, half through SL2 and half through Veritas Merge1
//!
//! About 1% of all items are over 10 MiB (a WhatsApp video or a long recording: 3% of the
//! WhatsApp and voice items), and about 2% of the TeleMessage items come from a number no
//! mapping knows and carry no email address, so they fail with `user_mapping`.
//!
//! Employee `k` is `user<k>@contoso.com` on +447700950000 + k (`mailboxes` ≤ 10,000); outside
//! parties are +447700960000 onwards and unmapped employees +447700970000 onwards, all apart
//! from the numbers of the demo mapping files. Everything is a pure function of the seed, the
//! day and the item's index, so a day is the same in every run and media need not be stored:
//! [`media_bytes`] makes a file's bytes from its name.

use base64::Engine;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::{json, Value};

/// The shape of a generated day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// Items per day, over all partners.
    pub items: usize,
    /// Employees (and so mailboxes), at most 10,000.
    pub mailboxes: usize,
    pub seed: u64,
}

/// The partner an item of the mix travels through.
pub const PARTNERS: [&str; 4] = [
    "telemessage-o2",
    "telemessage-whatsapp",
    "celltrust-sl2",
    "merge1-celltrust",
];

/// What one generated item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sms,
    WhatsApp { media: Option<u64> },
    Voice { recording: Option<u64> },
    Sl2,
    Merge1,
}

impl Kind {
    pub fn partner(self) -> &'static str {
        match self {
            Kind::Sms | Kind::Voice { .. } => PARTNERS[0],
            Kind::WhatsApp { .. } => PARTNERS[1],
            Kind::Sl2 => PARTNERS[2],
            Kind::Merge1 => PARTNERS[3],
        }
    }
}

/// One item of the day, before it is written as a partner record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub index: usize,
    pub kind: Kind,
    pub time: DateTime<Utc>,
    /// The employee's mailbox number, or None when the employee is unmapped.
    pub employee: Option<usize>,
    /// The employee number used when unmapped, and the outside party.
    pub stranger: usize,
    pub other: usize,
}

/// SplitMix64: a well-mixed 64-bit value from any 64-bit input.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

impl Workload {
    /// The item `index` of `day`.
    pub fn plan(&self, day: NaiveDate, index: usize) -> Planned {
        let days = day.signed_duration_since(NaiveDate::MIN).num_days() as u64;
        let h = mix(self.seed ^ mix(days) ^ (index as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        let draw = |shift: u32, n: u64| (mix(h.rotate_left(shift)) % n.max(1)) as usize;
        let oversized = draw(11, 100) < 3;
        let size = |from: u64, to: u64| from + (mix(h ^ 0x5EED) % (to - from));
        let big = || size(10 * MIB + 512 * KIB, 12 * MIB);
        let kind = match draw(0, 10_000) {
            0..6500 => Kind::Sms,
            6500..9000 => Kind::WhatsApp {
                media: if oversized {
                    Some(big())
                } else {
                    (draw(17, 10) == 0).then(|| size(20 * KIB, 2 * MIB))
                },
            },
            9000..9800 => Kind::Voice {
                recording: if oversized {
                    Some(big())
                } else {
                    (draw(23, 5) == 0).then(|| size(200 * KIB, 2 * MIB))
                },
            },
            9800..9900 => Kind::Sl2,
            _ => Kind::Merge1,
        };
        let telemessage = matches!(kind.partner(), "telemessage-o2" | "telemessage-whatsapp");
        let unmapped = telemessage && draw(29, 50) == 0;
        let start = day.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        Planned {
            index,
            kind,
            time: start
                + Duration::milliseconds((index as i64 * 86_400_000) / self.items.max(1) as i64),
            employee: (!unmapped).then(|| draw(37, self.mailboxes as u64)),
            stranger: draw(41, 10_000),
            other: draw(47, 10_000),
        }
    }

    /// The day's records for one partner, each with its time under `_time`.
    pub fn records(&self, partner: &str, day: NaiveDate) -> Vec<Value> {
        (0..self.items)
            .map(|i| self.plan(day, i))
            .filter(|p| p.kind.partner() == partner)
            .map(|p| record(&p, day))
            .collect()
    }
}

/// The partner record of a planned item, in that partner's contract.
fn record(p: &Planned, day: NaiveDate) -> Value {
    let ts = p.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let partner = p.kind.partner();
    let id = format!("MIX-{day}-{:06}", p.index);
    let other = format!("+447700{}", 960_000 + p.other);
    let (number, email) = match p.employee {
        Some(k) => (
            format!("+447700{}", 950_000 + k),
            Some(format!("user{k}@contoso.com")),
        ),
        None => (format!("+447700{}", 970_000 + p.stranger), None),
    };
    let from = match &email {
        Some(email) => json!({"number": number, "email": email}),
        None => json!({"number": number}),
    };
    let text = format!(
        "Generated business message {} of {day}: confirming the order for client {}.",
        p.index, p.other
    );
    let file = |size: u64, ext: &str| format!("files/{partner}/{day}/gen/{size}-{}.{ext}", p.index);
    let mut record = match p.kind {
        Kind::Sms => json!({
            "archive_message_id": id, "message_type": "SMS", "network": "O2", "timestamp": ts,
            "direction": "outbound", "archive_initiator": number,
            "from": from, "to": [{"number": other}], "text": text,
        }),
        Kind::Voice { recording } => {
            let mut call = json!({
                "start": ts, "duration_seconds": 30 + p.other % 900, "outcome": "answered",
            });
            if let Some(size) = recording {
                call["recording"] = json!({"file": file(size, "wav"), "content_type": "audio/wav"});
            }
            json!({
                "archive_message_id": id, "message_type": "CALL", "network": "O2", "timestamp": ts,
                "direction": "outbound", "archive_initiator": number,
                "from": from, "to": [{"number": other}], "call": call,
            })
        }
        Kind::WhatsApp { media } => {
            let mut record = json!({
                "message_id": id, "type": "message", "timestamp": ts, "direction": "outbound",
                "archived_number": number, "chat": {"id": format!("MIX-CHAT-{}-{}", number, p.other)},
                "from": from, "to": [{"number": other}], "text": text,
            });
            if let Some(size) = media {
                let (ext, content_type) = if size > 2 * MIB {
                    ("mp4", "video/mp4")
                } else {
                    ("jpg", "image/jpeg")
                };
                record["attachments"] = json!([{
                    "file": file(size, ext), "content_type": content_type,
                    "name": format!("media-{}.{ext}", p.index),
                }]);
            }
            record
        }
        Kind::Sl2 => {
            let k = p.employee.unwrap_or(p.stranger);
            json!({
                "id": id, "timestamp": ts, "source_type": "P2P", "channel": "sms", "domain": "contoso",
                "direction": "outbound", "sl2_user": format!("user{k}@contoso.com"),
                "from": {"address": format!("user{k}@contoso.com"), "number": number},
                "to": [{"number": other}], "text": text,
            })
        }
        Kind::Merge1 => {
            let k = p.employee.unwrap_or(p.stranger);
            let eml = format!(
                "From: <user{k}@contoso.com>\r\nTo: <{}@sms.merge1.example>\r\nDate: {}\r\n\
                 Message-ID: <{id}@merge1.example>\r\nSubject: CellTrust SMS\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n",
                other.trim_start_matches('+'),
                p.time.to_rfc2822()
            );
            json!({ "id": id, "mime": base64::engine::general_purpose::STANDARD.encode(eml) })
        }
    };
    record["_time"] = Value::String(ts);
    record
}

/// The bytes of a generated media file named `<size>-<index>.<ext>`: `size` pseudo-random
/// bytes (incompressible, like real media), the same for the same name. None for other names.
pub fn media_bytes(name: &str) -> Option<Vec<u8>> {
    let stem = name.split('.').next()?;
    let (size, index) = stem.split_once('-')?;
    let size: usize = size.parse().ok().filter(|&s| s <= 64 * MIB as usize)?;
    let mut state = mix(index.parse::<u64>().ok()? ^ size as u64);
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        state = mix(state);
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(size);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_has_the_documented_shares() {
        let w = Workload {
            items: 100_000,
            mailboxes: 1000,
            seed: 1,
        };
        let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        let plans: Vec<Planned> = (0..w.items).map(|i| w.plan(day, i)).collect();
        let share = |f: &dyn Fn(&Planned) -> bool| {
            plans.iter().filter(|p| f(p)).count() as f64 / w.items as f64 * 100.0
        };
        let near =
            |got: f64, want: f64, by: f64| assert!((got - want).abs() < by, "{got} vs {want}");
        near(share(&|p| p.kind == Kind::Sms), 65.0, 1.0);
        near(
            share(&|p| matches!(p.kind, Kind::WhatsApp { .. })),
            25.0,
            1.0,
        );
        near(share(&|p| matches!(p.kind, Kind::Voice { .. })), 8.0, 0.5);
        near(
            share(&|p| matches!(p.kind, Kind::Sl2 | Kind::Merge1)),
            2.0,
            0.3,
        );
        near(
            share(
                &|p| matches!(p.kind, Kind::WhatsApp { media: Some(m) } | Kind::Voice { recording: Some(m) } if m > 10 * MIB),
            ),
            1.0,
            0.3,
        );
        near(share(&|p| p.employee.is_none()), 2.0, 0.4);
        let whatsapp = share(&|p| matches!(p.kind, Kind::WhatsApp { .. }));
        let small_media =
            share(&|p| matches!(p.kind, Kind::WhatsApp { media: Some(m) } if m <= 2 * MIB));
        near(small_media / whatsapp * 100.0, 9.7, 1.0);
        // The same seed and day give the same day.
        assert_eq!(w.plan(day, 4242), plans[4242]);
        assert!(plans.iter().all(|p| p.employee.is_none_or(|k| k < 1000)));
    }

    #[test]
    fn media_bytes_are_deterministic_and_sized() {
        let a = media_bytes("20480-7.jpg").unwrap();
        assert_eq!(a.len(), 20480);
        assert_eq!(a, media_bytes("20480-7.jpg").unwrap());
        assert_ne!(a, media_bytes("20480-8.jpg").unwrap());
        assert!(media_bytes("../etc/passwd").is_none());
        assert!(media_bytes("999999999999-1.bin").is_none());
    }
}
