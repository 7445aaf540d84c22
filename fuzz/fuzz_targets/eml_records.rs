//! Messages delivered as RFC 5322 (Merge1, TeleMessage EML exports): any bytes give an item or
//! an error, and an item renders (tracking headers in front) without a panic.
#![no_main]
use comms_archiver::item::ItemKey;
use comms_archiver::render::{render, RenderContext};
use comms_archiver::sources::eml::{EmlFlavor, EmlFormat};
use comms_archiver::sources::{Decoded, RecordFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for flavor in [EmlFlavor::Merge1, EmlFlavor::TeleMessage] {
        let format = EmlFormat {
            flavor,
            region: phonenumber::country::Id::GB,
        };
        if let Ok(record) = format.decode(data) {
            if let Ok(Decoded::Item(item)) = format.to_item(record, Vec::new()) {
                let ctx = RenderContext {
                    connector: "merge1",
                    partner: "merge1-celltrust",
                    invalid_domain: "merge1.invalid",
                };
                let _ = render(&item, &ItemKey::new("merge1", &item.partner_id), &ctx, &[]);
            }
        }
    }
});
