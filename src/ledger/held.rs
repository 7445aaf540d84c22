//! Held items: what a run could not deliver yet (a participant that maps to no mailbox, a
//! mailbox that does not exist or refused the copy, a message over the limit), kept in the
//! stage with everything a later run needs to deliver it: the item itself, files and all.
//!
//! `held/<connector>/<day>/<item-key>.json` is evidence, written once by the first run that
//! holds the item; a re-drive reads it, maps and renders the item again with the
//! configuration of its own time, and delivers what can now be delivered.
//!
//! A copy its mailbox refuses or does not know is found out while delivering, from the
//! stage, when the item itself is no longer in hand: what is held then is the copy
//! (`held/<connector>/<day>/copies/<mailbox>/<item-key>.json`, [`HeldCopy`]), its rendered
//! message staged already. A re-drive delivers that message to that mailbox.

use super::{Ledger, StagedCopy};
use crate::item::{Item, ItemKey};
use crate::stage::Created;
use crate::{Error, Result};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// The memory holding `item` takes while it is written: the item, and its record as written,
/// its files in base64 (4/3 of their size) with room for the rest of the record.
pub fn holding_bytes(item: &Item) -> u64 {
    let payload = item.content.payload_bytes();
    payload + payload.div_ceil(3) * 4 + 4096
}

/// Counts the bytes written to it (the size of a record before it is written).
struct Counted(usize);

impl std::io::Write for Counted {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One held item, as kept in the stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldItem {
    pub connector: String,
    /// The day whose delivery brought it.
    pub day: NaiveDate,
    pub item_key: String,
    /// The run that first held it, and when.
    pub run: String,
    pub held_at: DateTime<Utc>,
    pub item: Item,
}

/// One held copy: a staged message its mailbox could not take yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldCopy {
    pub connector: String,
    pub day: NaiveDate,
    pub item_key: String,
    pub run: String,
    pub held_at: DateTime<Utc>,
    pub copy: StagedCopy,
}

impl Ledger {
    /// Where a copy of an item of a connector-day is held.
    pub fn held_copy_key(connector: &str, day: NaiveDate, mailbox: &str, key: &str) -> String {
        format!("held/{connector}/{day}/copies/{mailbox}/{key}.json")
    }

    /// Whether a held key is a copy's ([`HeldCopy`]) rather than an item's.
    pub fn is_held_copy(key: &str) -> bool {
        key.split('/').nth(3) == Some("copies")
    }

    /// Keeps a staged copy its mailbox could not take, once; the held copy's stage key.
    pub async fn hold_copy(
        &self,
        connector: &str,
        day: NaiveDate,
        run: &str,
        copy: &StagedCopy,
    ) -> Result<String> {
        let at = Self::held_copy_key(connector, day, &copy.mailbox, &copy.item_key);
        let held = HeldCopy {
            connector: connector.to_string(),
            day,
            item_key: copy.item_key.clone(),
            run: run.to_string(),
            held_at: Utc::now(),
            copy: copy.clone(),
        };
        let bytes = serde_json::to_vec(&held).expect("a held copy serializes");
        self.stage.put_new(&at, &bytes).await?;
        Ok(at)
    }

    /// A held copy read back.
    pub async fn read_held_copy(&self, key: &str) -> Result<HeldCopy> {
        self.read::<HeldCopy>(key)
            .await?
            .ok_or_else(|| Error::State(format!("the held copy {key} is listed but missing")))
    }

    /// Where an item of a connector-day is held.
    pub fn held_key(connector: &str, day: NaiveDate, key: &ItemKey) -> String {
        format!("held/{connector}/{day}/{key}.json")
    }

    /// Keeps `item` of a connector-day for a later delivery, once: an item held already (by
    /// an earlier run of the day, or for another of its copies) is the same item and stays as
    /// first kept. The held item's stage key.
    pub async fn hold(
        &self,
        connector: &str,
        day: NaiveDate,
        run: &str,
        item: &Item,
    ) -> Result<String> {
        /// [`HeldItem`] as written, borrowing the item.
        #[derive(Serialize)]
        struct Holding<'a> {
            connector: &'a str,
            day: NaiveDate,
            item_key: &'a str,
            run: &'a str,
            held_at: DateTime<Utc>,
            item: &'a Item,
        }
        let key = ItemKey::new(connector, &item.partner_id);
        let at = Self::held_key(connector, day, &key);
        let holding = Holding {
            connector,
            day,
            item_key: key.as_str(),
            run,
            held_at: Utc::now(),
            item,
        };
        // Written once into a buffer of its exact size, and handed to the stage as it is: an
        // item held for its size takes no more than itself and one record of it
        // ([`holding_bytes`]), not a growing buffer and a copy besides.
        let cannot = |e: serde_json::Error| {
            Error::State(format!("cannot serialize the held item {at}: {e}"))
        };
        let mut size = Counted(0);
        serde_json::to_writer(&mut size, &holding).map_err(cannot)?;
        let mut bytes = Vec::with_capacity(size.0);
        serde_json::to_writer(&mut bytes, &holding).map_err(cannot)?;
        match self.stage.put_new_shared(&at, bytes.into()).await? {
            Created::New | Created::AlreadyExists => Ok(at),
        }
    }

    /// The keys of every item held for a connector-day.
    pub async fn held_keys(&self, connector: &str, day: NaiveDate) -> Result<Vec<String>> {
        let mut keys = self.stage.list(&format!("held/{connector}/{day}/")).await?;
        keys.sort();
        Ok(keys)
    }

    /// A held item read back; an error says which key cannot be read.
    pub async fn read_held(&self, key: &str) -> Result<HeldItem> {
        self.read::<HeldItem>(key)
            .await?
            .ok_or_else(|| Error::State(format!("the held item {key} is listed but missing")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::Attachment;
    use crate::stage::LocalStage;
    use std::sync::Arc;

    /// An MMS of the day from the archived +447700900123, with one file.
    fn mms(partner_id: &str, day: NaiveDate, text: &str, file: Attachment) -> Item {
        let time = day.and_hms_opt(9, 0, 0).unwrap().and_utc();
        Item::archived_mms(partner_id, time, Some(text), file)
    }

    #[tokio::test]
    async fn a_held_item_comes_back_whole_and_is_kept_once() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(Arc::new(LocalStage::new(dir.path())));
        let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        let photo = Attachment {
            name: "a.jpg".into(),
            content_type: "image/jpeg".into(),
            data: (0..=255u8).collect(),
        };
        let item = mms("O2-1", day, "photo", photo);
        let at = ledger.hold("o2", day, "r1", &item).await.unwrap();
        assert_eq!(ledger.hold("o2", day, "r2", &item).await.unwrap(), at);
        assert_eq!(ledger.held_keys("o2", day).await.unwrap(), vec![at.clone()]);
        let back = ledger.read_held(&at).await.unwrap();
        assert_eq!(back.item, item);
        assert_eq!(back.run, "r1", "the first hold is kept");
        assert_eq!(back.item_key, ItemKey::new("o2", "O2-1").as_str());
    }

    /// The collection's budget counts what holding an item takes from it: the item, and the
    /// record written for it, whose files are in base64.
    #[tokio::test]
    async fn holding_an_item_takes_no_more_than_the_budget_counts_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(Arc::new(LocalStage::new(dir.path())));
        let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        for (n, size) in [0usize, 1, 2, 3, 1000, 3 * 1024 * 1024 + 1]
            .into_iter()
            .enumerate()
        {
            let clip = Attachment {
                name: "clip.mp4".into(),
                content_type: "video/mp4".into(),
                data: (0..size).map(|i| i as u8).collect(),
            };
            let caption = "a \"quoted\" caption\n".repeat(20);
            let item = mms(&format!("O2-{n}"), day, &caption, clip);
            let at = ledger.hold("o2", day, "r1", &item).await.unwrap();
            let written = std::fs::metadata(dir.path().join(&at)).unwrap().len();
            let payload = item.content.payload_bytes();
            assert!(
                payload + written <= holding_bytes(&item),
                "{size} bytes of media: the item ({payload}) and its record ({written}) take \
                 more than the {} counted",
                holding_bytes(&item)
            );
        }
    }
}
