//! The journal: the import records of a run, written in batches, and the answer to whether
//! an earlier run imported a copy into its place.

use super::{ImportRecord, Ledger};
use crate::item::ItemKey;
use crate::stage::Created;
use crate::{Error, Result};
use chrono::{NaiveDate, Utc};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Where one copy of an item goes: a copy counts as imported only for the place that holds
/// it (the same store, mailbox and folder).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CopyPlace {
    pub destination: String,
    pub mailbox: String,
    pub folder: String,
    pub item_key: String,
}

impl CopyPlace {
    /// Where a record says its copy went; None for a record that does not say its store.
    pub(super) fn of(record: &ImportRecord) -> Option<CopyPlace> {
        Some(CopyPlace {
            destination: record.destination.clone()?,
            mailbox: record.mailbox.clone(),
            folder: record.folder.clone(),
            item_key: record.item_key.clone(),
        })
    }

    fn digest(&self) -> PlaceDigest {
        PlaceDigest::new(
            Some(&self.destination),
            &self.mailbox,
            &self.folder,
            &self.item_key,
        )
    }
}

/// A copy's place, as 128 bits of SHA-256 (as wide as the item keys themselves): what the
/// journal keeps of each copy it has seen recorded, so that a day of a few hundred thousand
/// copies is a few megabytes, not the records' strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct PlaceDigest([u8; 16]);

impl PlaceDigest {
    /// A place without a store (a record written before stores were recorded) is a place of
    /// its own, never the same as one with a store.
    pub(super) fn new(
        destination: Option<&str>,
        mailbox: &str,
        folder: &str,
        item_key: &str,
    ) -> PlaceDigest {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        match destination {
            Some(destination) => {
                hasher.update([1u8]);
                hasher.update(destination.as_bytes());
            }
            None => hasher.update([0u8]),
        }
        for part in [mailbox, folder, item_key] {
            hasher.update([0u8]);
            hasher.update(part.as_bytes());
        }
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&hasher.finalize()[..16]);
        PlaceDigest(digest)
    }

    /// The place a record says its copy went to.
    pub(super) fn of(record: &ImportRecord) -> PlaceDigest {
        PlaceDigest::new(
            record.destination.as_deref(),
            &record.mailbox,
            &record.folder,
            &record.item_key,
        )
    }
}

/// Whether a record says its copy went to `copy`.
fn records_place(record: &ImportRecord, copy: &CopyPlace) -> bool {
    record.destination.as_deref() == Some(copy.destination.as_str())
        && record.mailbox == copy.mailbox
        && record.folder == copy.folder
        && record.item_key == copy.item_key
}

/// Records a journal batch holds at most.
const JOURNAL_BATCH: usize = 256;
/// How long an import record may wait for its batch.
const JOURNAL_WAIT: Duration = Duration::from_secs(5);
/// How often a date's batches are listed again when a copy is not found in them.
const JOURNAL_RELIST: Duration = Duration::from_secs(2);

/// The import records of one run of a connector, written in batches: one stage write per
/// [`JOURNAL_BATCH`] copies (or [`JOURNAL_WAIT`]) instead of one per copy. A copy imported but
/// not yet written down when the run dies is found by the next run the way any unrecorded
/// copy is: its staged message exists, so the mailbox is asked before it is imported again.
///
/// The journal also answers whether an earlier run imported a copy, from the batches of the
/// copy's date (read once, listed again at most every [`JOURNAL_RELIST`] while copies are not
/// found) and from the records of ledgers written before the journal.
pub struct Journal {
    ledger: Ledger,
    connector: String,
    /// This writer, unique among every run that ever writes the ledger.
    writer: String,
    state: tokio::sync::Mutex<JournalState>,
}

#[derive(Default)]
struct JournalState {
    /// Records not written yet, with the date of their item.
    pending: Vec<(NaiveDate, ImportRecord)>,
    since: Option<Instant>,
    batches_written: u64,
    dates: HashMap<NaiveDate, DateIndex>,
}

/// What the journal batches of one date hold.
#[derive(Default)]
struct DateIndex {
    read: HashSet<String>,
    /// The places of the copies recorded, of those records that say their store.
    copies: HashSet<PlaceDigest>,
    listed_at: Option<Instant>,
}

impl DateIndex {
    /// Notes the places of `records` (those that say their store: a record without one is
    /// left to the mailbox).
    fn note(&mut self, records: &[ImportRecord]) {
        let placed = records.iter().filter(|r| r.destination.is_some());
        self.copies.extend(placed.map(PlaceDigest::of));
    }
}

impl Journal {
    pub(super) fn new(ledger: Ledger, connector: &str) -> Journal {
        // Start time, process and a count of this process's journals: no two writers share
        // a name, so no batch is ever refused for existing already.
        static JOURNALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = JOURNALS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let started = Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        Journal {
            ledger,
            connector: connector.to_string(),
            writer: format!("{started}-{}-{n}", std::process::id()),
            state: Default::default(),
        }
    }

    /// This run's id: its import records and its run log carry it.
    pub fn run_id(&self) -> &str {
        &self.writer
    }

    pub(super) fn prefix(connector: &str, date: NaiveDate) -> String {
        format!("ledger/{connector}/journal/{date}/")
    }

    /// Adds the record of an imported copy of an item of `date`; writes the pending batch
    /// when it is full or has waited long enough.
    pub async fn record(&self, date: NaiveDate, mut record: ImportRecord) -> Result<()> {
        record.run.get_or_insert_with(|| self.writer.clone());
        let due = {
            let mut state = self.state.lock().await;
            state.pending.push((date, record));
            let since = *state.since.get_or_insert_with(Instant::now);
            state.pending.len() >= JOURNAL_BATCH || since.elapsed() >= JOURNAL_WAIT
        };
        match due {
            true => self.flush().await,
            false => Ok(()),
        }
    }

    /// Whether every record added so far is written.
    pub async fn is_flushed(&self) -> bool {
        self.state.lock().await.pending.is_empty()
    }

    /// Writes every pending record (one batch per date of the items). On failure the records
    /// stay pending for the next try.
    pub async fn flush(&self) -> Result<()> {
        // Grouped by date, each group with the batch number it is written under.
        let (batches, first) = {
            let mut state = self.state.lock().await;
            state.since = None;
            let mut batches: std::collections::BTreeMap<NaiveDate, Vec<ImportRecord>> =
                Default::default();
            for (date, record) in std::mem::take(&mut state.pending) {
                batches.entry(date).or_default().push(record);
            }
            let first = state.batches_written;
            state.batches_written += batches.len() as u64;
            (batches, first)
        };
        let mut batches = batches.into_iter().enumerate();
        for (n, (date, records)) in batches.by_ref() {
            let mut lines = Vec::with_capacity(records.len() * 400);
            for record in &records {
                serde_json::to_writer(&mut lines, record).expect("a record always serializes");
                lines.push(b'\n');
            }
            let key = format!(
                "{}{}-{:06}.jsonl",
                Self::prefix(&self.connector, date),
                self.writer,
                first + n as u64
            );
            let failure = match self.ledger.stage.put_new(&key, &lines).await {
                Ok(Created::New) => {
                    tracing::debug!(connector = %self.connector, %key, records = records.len(),
                        "import records written");
                    None
                }
                Ok(Created::AlreadyExists) => Some(Error::State(format!(
                    "journal batch '{key}' exists already; its records are written again \
                     under the next name"
                ))),
                Err(e) => Some(e.into()),
            };
            let mut state = self.state.lock().await;
            if let Some(e) = failure {
                // This batch and those after it wait for the next try.
                let unwritten = std::iter::once((date, records)).chain(batches.map(|(_, b)| b));
                for (date, records) in unwritten {
                    state.pending.extend(records.into_iter().map(|r| (date, r)));
                }
                state.since.get_or_insert_with(Instant::now);
                return Err(e);
            }
            state.dates.entry(date).or_default().note(&records);
        }
        Ok(())
    }

    /// Whether any run recorded the copy as imported into its place: pending here, in a
    /// journal batch of its date, or in a ledger written before the journal.
    pub async fn knows(&self, date: NaiveDate, copy: &CopyPlace) -> Result<bool> {
        if self.recorded(date, copy).await? {
            return Ok(true);
        }
        let key = ItemKey::from_hex(&copy.item_key);
        let legacy = self
            .ledger
            .legacy_record(&self.connector, &copy.mailbox, &key)
            .await?;
        Ok(legacy.as_ref().and_then(CopyPlace::of).as_ref() == Some(copy))
    }

    /// Whether the journal records the copy in its place: pending here or in a batch of its
    /// date.
    pub async fn recorded(&self, date: NaiveDate, copy: &CopyPlace) -> Result<bool> {
        let mut state = self.state.lock().await;
        if state.pending.iter().any(|(_, r)| records_place(r, copy)) {
            return Ok(true);
        }
        let digest = copy.digest();
        let index = state.dates.entry(date).or_default();
        if index.copies.contains(&digest) {
            return Ok(true);
        }
        if index
            .listed_at
            .is_some_and(|t| t.elapsed() < JOURNAL_RELIST)
        {
            return Ok(false);
        }
        // Other runs may have written batches since: read the new ones.
        let batches = self
            .ledger
            .stage
            .list(&Self::prefix(&self.connector, date))
            .await?;
        for batch in batches {
            if state.dates.entry(date).or_default().read.contains(&batch) {
                continue;
            }
            let records = self.ledger.read_batch(&batch).await?;
            let index = state.dates.entry(date).or_default();
            index.note(&records);
            index.read.insert(batch);
        }
        let index = state.dates.entry(date).or_default();
        index.listed_at = Some(Instant::now());
        Ok(index.copies.contains(&digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::{LocalStage, Stage};
    use std::sync::Arc;

    fn d(day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, day).unwrap()
    }

    fn record(n: u32, date: NaiveDate) -> ImportRecord {
        let key = ItemKey::new("o2", &format!("O2-{n}"));
        ImportRecord {
            item_id: format!("O2-{n}"),
            item_key: key.to_string(),
            day: d(20),
            destination: Some("maildir /var/mail".into()),
            mailbox: format!("user{}@contoso.com", n % 7),
            folder: "O2".into(),
            mapped_by: Some("email property".into()),
            run: None,
            staged: Ledger::staged_key("o2", date, &format!("user{}@contoso.com", n % 7), &key),
            sha256: "00".into(),
            bytes: 1,
            left_out: Vec::new(),
            imported_at: Utc::now(),
        }
    }

    fn place(r: &ImportRecord) -> CopyPlace {
        CopyPlace::of(r).expect("the record says where")
    }

    #[tokio::test]
    async fn the_journal_writes_batches_and_another_run_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let stage: Arc<dyn Stage> = Arc::new(LocalStage::new(dir.path()));
        let ledger = Ledger::new(stage.clone());
        let journal = ledger.journal("o2");
        // 300 copies of the 20th and 10 late ones of the 19th.
        for n in 0..310 {
            let date = if n < 300 { d(20) } else { d(19) };
            journal.record(date, record(n, date)).await.unwrap();
        }
        assert_eq!(
            stage
                .list("ledger/o2/journal/2026-11-20/")
                .await
                .unwrap()
                .len(),
            1,
            "a full batch is written at once"
        );
        journal.flush().await.unwrap();
        let mut twentieth = stage.list("ledger/o2/journal/2026-11-20/").await.unwrap();
        twentieth.sort();
        assert_eq!(twentieth.len(), 2);
        assert_eq!(
            stage
                .list("ledger/o2/journal/2026-11-19/")
                .await
                .unwrap()
                .len(),
            1
        );
        let lines = |key: String| {
            let stage = stage.clone();
            async move { ledger_lines(&stage.get(&key).await.unwrap().unwrap()) }
        };
        assert_eq!(lines(twentieth[0].clone()).await, 256);
        assert_eq!(lines(twentieth[1].clone()).await, 44);

        // A later run knows every recorded copy, under its own date and in its place only.
        let later = ledger.journal("o2");
        for n in [0, 255, 299] {
            let r = record(n, d(20));
            let copy = place(&r);
            assert!(later.knows(d(20), &copy).await.unwrap(), "{n}");
            assert!(!later.knows(d(21), &copy).await.unwrap(), "{n}");
            let elsewhere = CopyPlace {
                destination: "imap mail.contoso.com:993".into(),
                ..copy.clone()
            };
            assert!(!later.knows(d(20), &elsewhere).await.unwrap(), "{n}");
            let renamed = CopyPlace {
                folder: "O2 renamed".into(),
                ..copy.clone()
            };
            assert!(!later.knows(d(20), &renamed).await.unwrap(), "{n}");
        }
        let late = record(305, d(19));
        assert!(later.knows(d(19), &place(&late)).await.unwrap());
        let other_mailbox = CopyPlace {
            mailbox: "someone@contoso.com".into(),
            ..place(&late)
        };
        assert!(!later.knows(d(20), &other_mailbox).await.unwrap());

        // Records of a ledger written before the journal are known where they say they went;
        // one that does not say (written before destinations were) is left to the mailbox.
        let old = record(400, d(20));
        let key = ItemKey::from_hex(&old.item_key);
        assert!(!later.knows(d(20), &place(&old)).await.unwrap());
        let legacy = format!("ledger/o2/imported/{}/{key}.json", old.mailbox);
        let undated = ImportRecord {
            destination: None,
            ..old.clone()
        };
        stage
            .put(&legacy, &serde_json::to_vec(&undated).unwrap())
            .await
            .unwrap();
        assert!(!later.knows(d(20), &place(&old)).await.unwrap());
        stage
            .put(&legacy, &serde_json::to_vec(&old).unwrap())
            .await
            .unwrap();
        assert!(later.knows(d(20), &place(&old)).await.unwrap());

        // A damaged batch is an error that names it.
        stage.put(&twentieth[1], b"{not json\n").await.unwrap();
        let fresh = ledger.journal("o2");
        let e = fresh
            .knows(d(20), &place(&record(999, d(20))))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(&twentieth[1]) && e.contains("line 1"), "{e}");
    }

    fn ledger_lines(bytes: &[u8]) -> usize {
        bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count()
    }
}
