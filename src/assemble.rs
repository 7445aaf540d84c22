//! The composition root: a validated configuration becomes a ready archiver. It sits above
//! every component, so that none of them needs the configuration as a whole.

use crate::config::Config;
use crate::mapping::{Mapper, MappingTable};
use crate::pipeline::{Archiver, Connector};
use crate::Result;

impl Archiver {
    /// Builds every enabled connector and backend from a validated configuration; mapping
    /// CSVs are read and checked here.
    pub fn from_config(config: &Config) -> Result<Archiver> {
        let region = config.mapping.default_region;
        let secrets = config.secrets();
        let mut connectors = Vec::new();
        for (name, c) in config.enabled_connectors() {
            let table = match &c.mapping_csv {
                Some(path) => Some(MappingTable::load(path, region, &config.mapping.domains)?),
                None => None,
            };
            let source = crate::sources::build(&crate::sources::Building {
                name,
                connector: c,
                region,
                max_item_bytes: config.archiver.read_limit(),
                secrets: &secrets,
            })?;
            connectors.push(Connector {
                name: name.to_string(),
                partner: c.partner,
                folder: c.folder().to_string(),
                source,
                mapper: Mapper::new(table, c.use_email_property, config.mapping.domains.clone())
                    .with_catch_all(config.mapping.unmapped_mailbox.as_deref()),
            });
        }
        let mailbox = crate::mailbox::build(&config.mailbox, &secrets)?;
        let archiver = Archiver::new(
            connectors,
            crate::stage::build(&config.stage, &secrets)?,
            mailbox,
            config.archiver.max_item_bytes,
        )
        .with_oversize(config.archiver.oversize)
        .with_max_in_flight(config.max_in_flight())
        .with_max_in_flight_bytes(config.archiver.max_in_flight_bytes);
        Ok(
            match crate::alerts::Alerter::build(&config.alerts, &secrets)? {
                Some(alerter) => archiver.with_alerts(alerter, config.alerts.clone()),
                None => archiver,
            },
        )
    }
}
