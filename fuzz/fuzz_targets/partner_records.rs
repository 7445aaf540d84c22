//! Every JSON partner format (TeleMessage O2 and WhatsApp, CellTrust SL2): any bytes give a
//! record, an exclusion or an error, never a panic. The first byte picks the format.
#![no_main]
use comms_archiver::sources::celltrust::{Sl2Format, Sl2Scope};
use comms_archiver::sources::telemessage::{O2Format, WhatsAppFormat};
use comms_archiver::sources::RecordFormat;
use libfuzzer_sys::fuzz_target;
use phonenumber::country;

fn run<F: RecordFormat>(format: &F, bytes: &[u8]) {
    if let Ok(record) = format.decode(bytes) {
        let _ = F::media(&record);
        let _ = F::partner_id(&record);
        let _ = format.to_item(record, Vec::new());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    match pick % 3 {
        0 => run(
            &O2Format {
                region: country::Id::GB,
            },
            bytes,
        ),
        1 => run(
            &WhatsAppFormat {
                region: country::Id::GB,
            },
            bytes,
        ),
        _ => run(
            &Sl2Format {
                region: country::Id::US,
                scope: Sl2Scope {
                    domain: "contoso".into(),
                    enable_domain: true,
                    units: vec!["Trading".into()],
                },
            },
            bytes,
        ),
    }
});
