//! Veritas Merge1 for CellTrust: items Merge1 already converted to RFC 5322 messages, read
//! by the EML format. Contract: `docs/partners/merge1.md`.

use super::eml::{EmlFlavor, EmlFormat};
use super::partner::{AuthKind, Building, Descriptor, Transport};

/// CellTrust through Veritas Merge1 (items already converted to email).
pub const PARTNER: Descriptor = Descriptor {
    name: "merge1-celltrust",
    default_folder: "CellTrust",
    invalid_domain: "merge1.invalid",
    vendor: "merge1",
    feed: "items",
    auth: AuthKind::ApiKey,
    transports: &[Transport::Drop, Transport::Https, Transport::Smtp],
    celltrust_table: false,
    email: Some(EmlFlavor::Merge1),
    build: |building: &Building<'_>| {
        let format = EmlFormat {
            flavor: EmlFlavor::Merge1,
            region: building.region,
        };
        building.source(format, None)
    },
};
