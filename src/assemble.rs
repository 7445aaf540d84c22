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
        let stage = crate::stage::build(&config.stage, &secrets)?;
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
                stage: stage.clone(),
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
        let archiver = Archiver::new(connectors, stage, mailbox, config.archiver.max_item_bytes)
            .with_oversize(config.archiver.oversize)
            .with_max_in_flight(config.max_in_flight())
            .with_max_in_flight_bytes(config.archiver.max_in_flight_bytes)
            .with_delivery_shards(config.archiver.delivery_shards)
            .with_lease_secs(config.archiver.lease_secs);
        Ok(
            match crate::alerts::Alerter::build(&config.alerts, &secrets)? {
                Some(alerter) => archiver.with_alerts(alerter, config.alerts.clone()),
                None => archiver,
            },
        )
    }
}

impl crate::intake::Intake {
    /// The SMTP intake the configuration asks for, keeping into `stage`; None without an
    /// `[intake]` table. The TLS files and the AUTH secret are read here.
    pub fn from_config(
        config: &Config,
        stage: std::sync::Arc<dyn crate::stage::Stage>,
    ) -> Result<Option<crate::intake::Intake>> {
        use crate::intake::{Credentials, Intake, Keeper, Route, Settings};
        use crate::sources::eml::EmlFormat;
        let Some(intake) = &config.intake else {
            return Ok(None);
        };
        let secrets = config.secrets();
        let tls = match &intake.tls {
            Some(tls) => Some(
                crate::intake::tls_config(tls).map_err(|why| config.error("intake.tls", why))?,
            ),
            None => None,
        };
        let auth = match &intake.auth {
            Some(auth) => Some(Credentials::new(
                auth.username.clone(),
                secrets.resolve("intake.auth.password", Some(&auth.password))?,
            )),
            None => None,
        };
        let mut routes = Vec::new();
        for (name, connector) in config.enabled_connectors() {
            let crate::sources::SourceConfig::Smtp { recipients, .. } = &connector.source else {
                continue;
            };
            let Some(flavor) = connector.partner.descriptor().email else {
                continue;
            };
            let format = EmlFormat {
                flavor,
                region: config.mapping.default_region,
            };
            routes.extend(recipients.iter().map(|r| Route {
                recipient: r.to_ascii_lowercase(),
                connector: name.to_string(),
                format,
            }));
        }
        let settings = Settings {
            hostname: intake.hostname.clone(),
            max_message_bytes: intake.max_message_bytes,
            require_tls: intake.require_tls,
            tls,
            auth,
            idle: std::time::Duration::from_secs(intake.idle_timeout_secs),
            networks: intake.networks(),
            max_connections: intake.max_connections,
            client_certificates: intake.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
            max_buffered_bytes: intake.max_buffered_bytes,
        };
        let keeper = Keeper::new(stage, config.schedule.catch_up_days);
        Ok(Some(Intake::new(settings, routes, keeper)))
    }
}
