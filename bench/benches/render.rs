//! The renderer on a generated day's mix (`comms_archiver_testkit::workload`), one core: items per
//! second, against the floor of base64-encoding the same files and copying the same text.
//! Items whose files alone exceed 10 MiB are left out, as the pipeline never renders them.

use base64::Engine;
use chrono::NaiveDate;
use comms_archiver::item::{Content, Item, ItemKey};
use comms_archiver::render::{render, RenderContext};
use comms_archiver::sources::celltrust::{Sl2Format, Sl2Scope};
use comms_archiver::sources::eml::{EmlFlavor, EmlFormat};
use comms_archiver::sources::telemessage::{O2Format, WhatsAppFormat};
use comms_archiver::sources::{Decoded, RecordFormat};
use comms_archiver_testkit::workload::{media_bytes, Workload, PARTNERS};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use phonenumber::country::Id;
use serde_json::Value;

struct Prepared {
    item: Item,
    key: ItemKey,
    partner: &'static str,
    mailboxes: Vec<Option<String>>,
}

fn decode<F: RecordFormat>(format: &F, bytes: &[u8]) -> Option<Item> {
    let record = format.decode(bytes).ok()?;
    let media = F::media(&record)
        .into_iter()
        .map(|m| comms_archiver::item::Attachment {
            data: media_bytes(m.location.rsplit('/').next().unwrap_or_default())
                .expect("generated media"),
            name: m.name,
            content_type: m.content_type,
        })
        .collect();
    match format.to_item(record, media).ok()? {
        Decoded::Item(item) => Some(*item),
        Decoded::Excluded { .. } => None,
    }
}

/// The day's items as the pipeline would render them.
fn day(items: usize) -> Vec<Prepared> {
    let workload = Workload { items, mailboxes: 1000, seed: 20261121 };
    let date = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
    let mut out = Vec::new();
    for partner in PARTNERS {
        for record in workload.records(partner, date) {
            let item = match partner {
                "telemessage-o2" => decode(&O2Format { region: Id::GB }, record.to_string().as_bytes()),
                "telemessage-whatsapp" => {
                    decode(&WhatsAppFormat { region: Id::GB }, record.to_string().as_bytes())
                }
                "celltrust-sl2" => decode(
                    &Sl2Format {
                        region: Id::GB,
                        scope: Sl2Scope { domain: "contoso".into(), enable_domain: true, units: vec![] },
                    },
                    record.to_string().as_bytes(),
                ),
                _ => {
                    let mime = record["mime"].as_str().map(|m| {
                        base64::engine::general_purpose::STANDARD.decode(m).unwrap()
                    });
                    decode(
                        &EmlFormat { flavor: EmlFlavor::Merge1, region: Id::GB },
                        &mime.unwrap_or_default(),
                    )
                }
            };
            let Some(item) = item else { continue };
            if item.content.payload_bytes() > 10 * 1024 * 1024 {
                continue;
            }
            let mailboxes = item.participants.iter().map(|p| p.email.clone()).collect();
            let id = record_id(&record);
            out.push(Prepared { key: ItemKey::new("bench", &id), item, partner, mailboxes });
        }
    }
    out
}

fn record_id(record: &Value) -> String {
    ["archive_message_id", "message_id", "id"]
        .iter()
        .find_map(|k| record[k].as_str())
        .unwrap_or_default()
        .to_string()
}

fn render_all(day: &[Prepared]) -> usize {
    day.iter()
        .map(|p| {
            let ctx = RenderContext {
                connector: "bench",
                partner: p.partner,
                invalid_domain: "telemessage.invalid",
            };
            render(&p.item, &p.key, &ctx, &p.mailboxes).expect("renders").len()
        })
        .sum()
}

/// The floor: the same files base64-encoded and the same text copied, nothing else.
fn floor_all(day: &[Prepared]) -> usize {
    let engine = &base64::engine::general_purpose::STANDARD;
    let files = |media: &[comms_archiver::item::Attachment]| {
        media.iter().map(|a| engine.encode(&a.data).len()).sum::<usize>()
    };
    day.iter()
        .map(|p| match &p.item.content {
            Content::Sms { text } => text.as_bytes().to_vec().len(),
            Content::Mms { text, media } => text.clone().unwrap_or_default().len() + files(media),
            Content::Call(c) | Content::WhatsAppCall(c) => {
                c.recording.as_ref().map_or(0, |r| engine.encode(&r.data).len())
            }
            Content::WhatsApp(m) => m.text.clone().unwrap_or_default().len() + files(&m.media),
            Content::CellTrust(c) => c.text.clone().unwrap_or_default().len() + files(&c.media),
            Content::Email { raw, .. } => raw.clone().len(),
        })
        .sum()
}

fn bench(c: &mut Criterion) {
    let mix = day(2_000);
    let text: Vec<Prepared> = day(2_000)
        .into_iter()
        .filter(|p| p.item.content.payload_bytes() < 4096)
        .collect();
    for (name, set) in [("mix", &mix), ("text-only", &text)] {
        let mut group = c.benchmark_group(format!("render-{name}"));
        group.sample_size(10);
        group.throughput(Throughput::Elements(set.len() as u64));
        group.bench_function("render", |b| b.iter(|| black_box(render_all(black_box(set)))));
        group.bench_function("base64-and-copy floor", |b| {
            b.iter(|| black_box(floor_all(black_box(set))))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
