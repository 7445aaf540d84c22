//! A connector-day as the SMTP intake kept it (`crate::intake::store`): read like a drop,
//! reconciled against the intake's acceptance records as drops are against their
//! manifests. Every message the intake acknowledged must be there, with the SHA-256 it was
//! acknowledged with, or nothing of the day is imported and it stays open.

use super::eml::EmlFormat;
use super::{ItemStream, Pulled, Source, SourceError};
use crate::intake::store::{self, Accepted};
use crate::stage::Stage;
use async_trait::async_trait;
use chrono::{NaiveDate, Utc};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// A connector's SMTP intake, seen as a source.
pub struct IntakeSource {
    stage: Arc<dyn Stage>,
    connector: String,
    format: EmlFormat,
    /// How long after a day ends its messages may still arrive.
    settle: chrono::Duration,
    max_item_bytes: u64,
}

impl IntakeSource {
    pub fn new(
        stage: Arc<dyn Stage>,
        connector: &str,
        format: EmlFormat,
        settle: chrono::Duration,
        max_item_bytes: u64,
    ) -> IntakeSource {
        IntakeSource {
            stage,
            connector: connector.to_string(),
            format,
            settle,
            max_item_bytes,
        }
    }
}

#[async_trait]
impl Source for IntakeSource {
    async fn open(&self, day: NaiveDate) -> Result<Box<dyn ItemStream>, SourceError> {
        let ends = day
            .succ_opt()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc() + self.settle);
        if let Some(ready) = ends.filter(|ready| Utc::now() < *ready) {
            return Err(SourceError::NotReady(format!(
                "the SMTP intake keeps {day} open until {} UTC for late deliveries \
                 (source.settle_hours)",
                ready.format("%Y-%m-%d %H:%M")
            )));
        }
        let intake = store::read_day(self.stage.as_ref(), &self.connector, day)
            .await
            .map_err(|why| {
                SourceError::Unavailable(format!("the SMTP intake of {day} cannot be read: {why}"))
            })?;
        let missing: Vec<&str> = intake
            .recorded
            .keys()
            .filter(|k| intake.kept.binary_search(k).is_err())
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(SourceError::Reconciliation(format!(
                "the SMTP intake acknowledged {} message(s) for {day}, but {} of them are not in \
                 the stage (item keys {}); nothing of the day is imported until they are \
                 restored from the stage's backup or the partner sends them again",
                intake.recorded.len(),
                missing.len(),
                missing.join(", ")
            )));
        }
        let unrecorded = intake.kept.len() - intake.recorded.len();
        if unrecorded > 0 {
            // Kept, but the process stopped before their acceptance was recorded: the
            // sender was never told 250 and will send them again; they are read now.
            tracing::info!(
                connector = %self.connector,
                day = %day,
                unrecorded,
                "messages kept without an acceptance record (never acknowledged) are read too"
            );
        }
        tracing::info!(
            connector = %self.connector,
            day = %day,
            accepted = intake.recorded.len(),
            kept = intake.kept.len(),
            "SMTP intake reconciled"
        );
        Ok(Box::new(IntakeStream {
            stage: self.stage.clone(),
            connector: self.connector.clone(),
            day,
            keys: intake.kept.into(),
            recorded: intake.recorded,
            format: self.format,
            max_item_bytes: self.max_item_bytes,
        }))
    }

    fn describe(&self) -> String {
        format!("SMTP intake of connector {} in the stage", self.connector)
    }

    async fn check(&self, _connect: bool) -> Result<String, SourceError> {
        let today = Utc::now().date_naive();
        let intake = store::read_day(self.stage.as_ref(), &self.connector, today)
            .await
            .map_err(SourceError::Unavailable)?;
        Ok(format!(
            "{}: {} message(s) accepted so far today ({today})",
            self.describe(),
            intake.recorded.len()
        ))
    }
}

struct IntakeStream {
    stage: Arc<dyn Stage>,
    connector: String,
    day: NaiveDate,
    keys: VecDeque<String>,
    recorded: BTreeMap<String, Accepted>,
    format: EmlFormat,
    max_item_bytes: u64,
}

#[async_trait]
impl ItemStream for IntakeStream {
    async fn next(&mut self) -> Result<Option<Pulled>, SourceError> {
        let Some(key) = self.keys.pop_front() else {
            return Ok(None);
        };
        let stored = store::message_key(&self.connector, self.day, &key);
        let bytes = self
            .stage
            .get(&stored)
            .await
            .map_err(|e| SourceError::Unavailable(e.to_string()))?
            .ok_or_else(|| SourceError::Unavailable(format!("{stored} was listed but is gone")))?;
        if let Some(accepted) = self.recorded.get(&key) {
            if crate::item::sha256_hex(&bytes) != accepted.sha256 {
                return Err(SourceError::Reconciliation(format!(
                    "{stored} no longer has the SHA-256 the intake acknowledged it with; \
                     nothing more of {} is imported until it is restored",
                    self.day
                )));
            }
        }
        let location = format!("intake {key}");
        Ok(Some(
            super::pull_message(&self.format, &bytes, location, self.max_item_bytes).await?,
        ))
    }
}
