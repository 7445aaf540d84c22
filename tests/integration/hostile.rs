//! Hostile input: mutated partner records, messages, mapping files and configurations give a
//! clear error or an item, never a panic; whatever partner strings hold, rendering never lets
//! one create a header. Deterministic (a seeded generator), so a failure replays.

use crate::support::repo;
use comms_archiver::item::{Content, Direction, Item, ItemKey, Participant, Role};
use comms_archiver::render::{render, RenderContext};
use comms_archiver::sources::celltrust::{Sl2Format, Sl2Scope};
use comms_archiver::sources::eml::{EmlFlavor, EmlFormat};
use comms_archiver::sources::telemessage::{O2Format, WhatsAppFormat};
use comms_archiver::sources::RecordFormat;
use phonenumber::country;
use std::path::Path;

/// xorshift64*: small, seeded, good enough to mutate inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Flips, inserts, deletes or truncates a few bytes.
    fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        const NASTY: &[&[u8]] = &[
            b"\r\n",
            b"\0",
            b"\"",
            b"\\",
            b"{",
            b"}",
            b"[",
            b"]",
            b",",
            b":",
            b"\xff\xfe",
            "\u{2028}".as_bytes(),
            b"--",
            b"=?utf-8?b?",
            b"\r\nBcc: x@evil.example\r\n",
        ];
        let mut out = input.to_vec();
        for _ in 0..1 + self.below(4) {
            let at = self.below(out.len() + 1);
            match self.below(5) {
                0 if !out.is_empty() => {
                    let i = at.min(out.len() - 1);
                    out[i] ^= 1 << self.below(8);
                }
                1 => {
                    let piece = NASTY[self.below(NASTY.len())];
                    out.splice(at..at, piece.iter().copied());
                }
                2 if at < out.len() => {
                    let end = (at + 1 + self.below(16)).min(out.len());
                    out.drain(at..end);
                }
                3 => out.truncate(at),
                _ => out.insert(at.min(out.len()), self.next() as u8),
            }
        }
        out
    }

    fn text(&mut self) -> String {
        const PIECES: &[&str] = &[
            "a",
            "Ω",
            "👍",
            "\r",
            "\n",
            "\r\n",
            "\t",
            "\0",
            "\u{1b}",
            ":",
            "<",
            ">",
            "\"",
            "=?",
            "?=",
            "Bcc: x@evil.example",
            "--=_ca_",
            " ",
            "ไทย",
            "عربي",
            "\u{2028}",
            "\u{85}",
        ];
        (0..self.below(12))
            .map(|_| PIECES[self.below(PIECES.len())])
            .collect()
    }
}

fn lines(path: &str) -> Vec<Vec<u8>> {
    std::fs::read_to_string(repo().join(path))
        .unwrap()
        .lines()
        .map(|l| l.as_bytes().to_vec())
        .collect()
}

/// Decodes and converts every mutation of every sample record; only errors or items.
fn survive<F: RecordFormat>(
    format: &F,
    samples: &[Vec<u8>],
    rng: &mut Rng,
    rounds: usize,
) -> (usize, usize) {
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..rounds {
        let sample = &samples[rng.below(samples.len())];
        let input = rng.mutate(sample);
        match format.decode(&input) {
            Ok(record) => match format.to_item(record, Vec::new()) {
                Ok(_) => ok += 1,
                Err(why) => {
                    assert!(!why.is_empty());
                    refused += 1
                }
            },
            Err(why) => {
                assert!(!why.is_empty());
                refused += 1
            }
        }
    }
    (ok, refused)
}

#[test]
fn mutated_partner_records_are_refused_or_read_never_a_panic() {
    let mut rng = Rng(0x5eed_0001);
    let gb = country::Id::GB;
    let (ok, refused) = survive(
        &O2Format { region: gb },
        &lines("fixtures/telemessage-o2/2026-11-20/o2-messages-0001.jsonl"),
        &mut rng,
        3000,
    );
    assert!(ok > 0 && refused > 0, "O2: {ok} read, {refused} refused");
    survive(
        &O2Format { region: gb },
        &lines("fixtures/telemessage-o2/2026-11-20/o2-calls-0001.jsonl"),
        &mut rng,
        1000,
    );
    survive(
        &WhatsAppFormat { region: gb },
        &lines("fixtures/telemessage-whatsapp/2026-11-20/whatsapp-0001.jsonl"),
        &mut rng,
        2000,
    );
    let sl2 = Sl2Format {
        region: country::Id::US,
        scope: Sl2Scope {
            domain: "contoso".into(),
            enable_domain: true,
            units: vec!["Trading".into()],
        },
    };
    survive(
        &sl2,
        &lines("fixtures/celltrust-sl2/2026-11-20/sl2-0001.jsonl"),
        &mut rng,
        2000,
    );
    let emls: Vec<Vec<u8>> = (1..=4)
        .map(|i| {
            std::fs::read(repo().join(format!(
                "fixtures/merge1-celltrust/2026-11-20/merge1-000{i}.eml"
            )))
            .unwrap()
        })
        .collect();
    for flavor in [EmlFlavor::Merge1, EmlFlavor::TeleMessage] {
        survive(&EmlFormat { flavor, region: gb }, &emls, &mut rng, 1500);
    }
}

#[test]
fn mutated_mapping_files_and_configurations_give_located_errors() {
    let mut rng = Rng(0x5eed_0002);
    let csv = std::fs::read(repo().join("config/mapping-o2.csv")).unwrap();
    for _ in 0..2000 {
        let input = rng.mutate(&csv);
        if let Err(e) = comms_archiver::mapping::MappingTable::parse(
            &input[..],
            Path::new("m.csv"),
            country::Id::GB,
            &["contoso.com".into()],
        ) {
            assert!(e.to_string().starts_with("mapping file m.csv"), "{e}");
        }
    }
    let config = std::fs::read(repo().join("config/example.toml")).unwrap();
    for _ in 0..1500 {
        let input = rng.mutate(&config);
        let text = String::from_utf8_lossy(&input);
        if let Err(e) = comms_archiver::config::Config::from_toml(Path::new("c.toml"), &text, &[]) {
            assert!(e.to_string().starts_with("c.toml"), "{e}");
            assert!(!e.message.is_empty());
        }
    }
}

#[test]
fn no_partner_string_creates_a_header() {
    let mut rng = Rng(0x5eed_0003);
    let ctx = RenderContext {
        connector: "o2",
        partner: "telemessage-o2",
        invalid_domain: "telemessage.invalid",
    };
    for round in 0..2000 {
        let party = |rng: &mut Rng, role| Participant {
            role: Some(role),
            phone: (rng.below(2) == 0).then(|| "+447700900123".to_string()),
            address: Some(rng.text()).filter(|a| !a.is_empty()),
            display_name: Some(rng.text()),
            email: None,
            archived: role == Role::From,
        };
        let item = Item {
            partner_id: rng.text(),
            time: chrono::DateTime::from_timestamp(1_795_000_000 + round, 0).unwrap(),
            direction: Direction::Inbound,
            conversation: Some(comms_archiver::item::Conversation {
                id: rng.text(),
                name: Some(rng.text()),
            }),
            participants: vec![party(&mut rng, Role::From), party(&mut rng, Role::To)],
            content: Content::Sms { text: rng.text() },
        };
        let key = ItemKey::new("o2", &item.partner_id);
        let bytes = render(&item, &key, &ctx, &[None, None])
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let text = String::from_utf8_lossy(&bytes);
        let head = &text[..text.find("\r\n\r\n").expect("a header block")];
        for line in head.split("\r\n") {
            assert!(
                !line.contains('\r') && !line.contains('\n'),
                "round {round}: bare CR/LF in {line:?}"
            );
            if line.starts_with([' ', '\t']) {
                continue;
            }
            let name = line.split(':').next().unwrap().to_ascii_lowercase();
            assert!(
                comms_archiver::render::headers::WRITTEN.contains(&name.as_str()),
                "round {round}: header {name:?} from partner data\n{head}"
            );
        }
        assert!(
            mail_parser::MessageParser::default()
                .parse(&bytes)
                .is_some(),
            "round {round}: unparsable"
        );
    }
}
