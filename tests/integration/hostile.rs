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

/// Decodes a record known to be broken: it must be refused, with a reason.
fn refuses<F: RecordFormat>(format: &F, input: &[u8], what: &str) -> String {
    match format.decode(input) {
        Err(why) => why,
        Ok(record) => match format.to_item(record, Vec::new()) {
            Err(why) => why,
            Ok(item) => panic!("{what}: read as {item:?}"),
        },
    }
}

/// Runs the mutations and checks that both outcomes happen: a run whose every mutation was
/// read, or refused, tested nothing of the other side.
fn survive_both<F: RecordFormat>(
    name: &str,
    format: &F,
    samples: &[Vec<u8>],
    rng: &mut Rng,
    rounds: usize,
) {
    let (ok, refused) = survive(format, samples, rng, rounds);
    let json = F::WIRE == comms_archiver::sources::Wire::Json;
    assert!(
        ok > 0 && refused > 0,
        "{name}: {ok} read, {refused} refused"
    );
    // Every sample itself is read, and a JSON record cut in half is refused (a message cut
    // short may still be a message).
    for sample in samples {
        assert!(
            format.decode(sample).is_ok(),
            "{name}: a sample is refused: {}",
            String::from_utf8_lossy(sample)
        );
        if !json {
            continue;
        }
        let half = &sample[..sample.len() / 2];
        let why = refuses(format, half, &format!("{name}: half a record"));
        assert!(!why.trim().is_empty());
    }
}

#[test]
fn mutated_partner_records_are_refused_or_read_never_a_panic() {
    let mut rng = Rng(0x5eed_0001);
    let gb = country::Id::GB;
    survive_both(
        "O2 messages",
        &O2Format { region: gb },
        &lines("fixtures/telemessage-o2/2026-11-20/o2-messages-0001.jsonl"),
        &mut rng,
        3000,
    );
    survive_both(
        "O2 calls",
        &O2Format { region: gb },
        &lines("fixtures/telemessage-o2/2026-11-20/o2-calls-0001.jsonl"),
        &mut rng,
        1000,
    );
    survive_both(
        "WhatsApp",
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
    survive_both(
        "CellTrust SL2",
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
    let merge1 = EmlFormat {
        flavor: EmlFlavor::Merge1,
        region: gb,
    };
    let (ok, refused) = survive(&merge1, &emls, &mut rng, 1500);
    assert!(
        ok > 0 && refused > 0,
        "Merge1: {ok} read, {refused} refused"
    );
    // TeleMessage's EML: the same messages with its archive headers, the sender archived.
    let telemessage: Vec<Vec<u8>> = emls
        .iter()
        .enumerate()
        .map(|(i, eml)| {
            let text = String::from_utf8_lossy(eml);
            let from = text
                .lines()
                .find_map(|l| l.strip_prefix("From:"))
                .and_then(|f| f.split(['<', '>']).nth(1))
                .unwrap();
            format!(
                "X-TELEMESSAGE-ArchiveMessageID: TM-{i}\r\nX-TELEMESSAGE-ArchiveInitiator: {from}\r\n{text}"
            )
            .into_bytes()
        })
        .collect();
    survive_both(
        "TeleMessage EML",
        &EmlFormat {
            flavor: EmlFlavor::TeleMessage,
            region: gb,
        },
        &telemessage,
        &mut rng,
        1500,
    );
    // A message without the id, the date or any participant is refused, and says which.
    let sample = String::from_utf8(emls[0].clone()).unwrap();
    let without = |prefix: &str| -> Vec<u8> {
        sample
            .split_inclusive('\n')
            .filter(|l| !l.starts_with(prefix))
            .collect::<String>()
            .into_bytes()
    };
    let why = refuses(&merge1, &without("Message-ID:"), "no Message-ID");
    assert!(why.contains("no id"), "{why}");
    let why = refuses(&merge1, &without("Date:"), "no Date");
    assert!(why.contains("Date"), "{why}");
    let nobody = without("From:")
        .split(|&b| b == b'\n')
        .filter(|l| !l.starts_with(b"To:"))
        .collect::<Vec<_>>()
        .join(&b'\n');
    let why = refuses(&merge1, &nobody, "no participant");
    assert!(why.contains("participant"), "{why}");
}

/// The 1-based number of the line of `text` that holds `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect(needle) + 1
}

#[test]
fn mutated_mapping_files_and_configurations_give_located_errors() {
    let mut rng = Rng(0x5eed_0002);
    let parse_csv = |input: &[u8]| {
        comms_archiver::mapping::MappingTable::parse(
            input,
            Path::new("m.csv"),
            country::Id::GB,
            &["contoso.com".into()],
        )
    };
    let csv = std::fs::read_to_string(repo().join("config/mapping-o2.csv")).unwrap();
    assert!(parse_csv(csv.as_bytes()).is_ok());
    // Broken where a user would break it: the error names the file and that line.
    let row = "+447700900102,bob.jones@contoso.com,,";
    for (broken, says) in [
        ("+44ABC,bob.jones@contoso.com,,", "not a valid phone number"),
        ("+447700900102,not-an-address,,", "not-an-address"),
        (
            "+447700900102,bob.jones@contoso.com,yesterday,",
            "yesterday",
        ),
        ("+447700900102,bob.jones@contoso.com", ""),
    ] {
        let text = csv.replace(row, broken);
        let line = line_of(&text, broken);
        let e = parse_csv(text.as_bytes()).expect_err(broken).to_string();
        assert!(
            e.starts_with(&format!("mapping file m.csv line {line}")),
            "{broken}: {e}"
        );
        assert!(e.contains(says), "{broken}: {e}");
    }
    let mut refused = 0;
    for _ in 0..2000 {
        let input = rng.mutate(csv.as_bytes());
        if let Err(e) = parse_csv(&input[..]) {
            refused += 1;
            let e = e.to_string();
            assert!(e.starts_with("mapping file m.csv"), "{e}");
        }
    }
    assert!(
        refused > 100,
        "only {refused} of 2000 mutated mapping files refused"
    );

    let config = std::fs::read_to_string(repo().join("config/example.toml")).unwrap();
    let parse =
        |text: &str| comms_archiver::config::Config::from_toml(Path::new("c.toml"), text, &[]);
    assert!(parse(&config).is_ok(), "{:?}", parse(&config).err());
    for (from, to, key) in [
        (
            "max_item_bytes = 10485760",
            "max_item_bytes = \"ten\"",
            "archiver.max_item_bytes",
        ),
        (
            "max_item_bytes = 10485760",
            "max_item_bytes = 0",
            "archiver.max_item_bytes",
        ),
        (
            "wake_time = \"04:00\"",
            "wake_time = \"25:00\"",
            "schedule.wake_time",
        ),
        (
            "wake_time = \"04:00\"",
            "wake_tim = \"04:00\"",
            "schedule.wake_tim",
        ),
        (
            "time_zone = \"UTC\"",
            "time_zone = \"Mars/Olympus\"",
            "schedule.time_zone",
        ),
        (
            "page_size = 200",
            "page_size = -3",
            "connectors.whatsapp.source.page_size",
        ),
    ] {
        assert!(config.contains(from), "{from}");
        let text = config.replacen(from, to, 1);
        let line = line_of(&text, to);
        let e = parse(&text).expect_err(to).to_string();
        assert!(
            e.starts_with(&format!("c.toml line {line}, key `{key}`")),
            "{to}: {e}"
        );
    }
    let mut refused = 0;
    for _ in 0..1500 {
        let input = rng.mutate(config.as_bytes());
        let text = String::from_utf8_lossy(&input);
        if let Err(e) = parse(&text) {
            refused += 1;
            let shown = e.to_string();
            assert!(shown.starts_with("c.toml"), "{shown}");
            assert!(!e.message.is_empty());
            // Every refusal points somewhere: a line or a key.
            assert!(e.line.is_some() || e.key.is_some(), "{shown}");
        }
    }
    assert!(
        refused > 100,
        "only {refused} of 1500 mutated configurations refused"
    );
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
