//! The day's reconciliation: the day as a whole, derived from durable evidence (every run's
//! run log and the journal's import records), never from the last run alone. A re-run that
//! finds every copy already imported does not turn the day into "imported 0": the copies an
//! earlier run imported count as imported, once, and the runs are listed.

use super::journal::PlaceDigest;
use super::{ImportRecord, Ledger};
use crate::incidents::Incident;
use crate::item::ItemKey;
use crate::report::{Held, PartialImport, RunKind, StatusLog};
use crate::{Error, Result};
use chrono::{Days, NaiveDate};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// The dates around a run's day always looked at: the overlap window before the day, and an
/// item a partner dated a day late.
const DATES_BEFORE: u64 = 2;
const DATES_AFTER: u64 = 1;

/// The copies imported for a day by any of its runs, each once: of each import record, what
/// the day's counts need and no more (a large connector-day has hundreds of thousands), with
/// the stores, mailboxes and folders that repeat held once.
#[derive(Default)]
pub struct DayImports {
    names: HashSet<Arc<str>>,
    copies: HashMap<PlaceDigest, DayCopy>,
}

/// One copy imported for the day.
#[derive(Debug)]
pub struct DayCopy {
    /// The store it went into; None in records written before stores were recorded.
    pub destination: Option<Arc<str>>,
    pub mailbox: Arc<str>,
    pub folder: Arc<str>,
    pub item_key: Box<str>,
    /// How its mailbox was found, as the status log counts it.
    pub mapped_by: &'static str,
    /// What was left out of it, for a copy imported partially.
    pub partial: Option<Box<PartialImport>>,
}

impl DayImports {
    /// Notes a record's copy, unless the day has it already.
    fn note(&mut self, record: ImportRecord) {
        let digest = PlaceDigest::of(&record);
        if self.copies.contains_key(&digest) {
            return;
        }
        let mapped_by = match record.mapped_by.as_deref() {
            Some(m) if m.starts_with("mapping CSV") => "mapping_csv",
            Some(m) if m.starts_with("catch-all") => "catch_all",
            Some(_) => "email_property",
            None => "not_recorded",
        };
        let copy = DayCopy {
            destination: record.destination.as_deref().map(|d| self.name(d)),
            mailbox: self.name(&record.mailbox),
            folder: self.name(&record.folder),
            item_key: record.item_key.into_boxed_str(),
            mapped_by,
            partial: (!record.left_out.is_empty()).then(|| {
                Box::new(PartialImport {
                    item_id: record.item_id,
                    mailbox: record.mailbox,
                    left_out: record.left_out,
                })
            }),
        };
        self.copies.insert(digest, copy);
    }

    fn name(&mut self, name: &str) -> Arc<str> {
        if let Some(known) = self.names.get(name) {
            return known.clone();
        }
        let name: Arc<str> = Arc::from(name);
        self.names.insert(name.clone());
        name
    }

    /// Every copy, each once, in no particular order.
    pub fn copies(&self) -> impl Iterator<Item = &DayCopy> {
        self.copies.values()
    }

    pub fn len(&self) -> usize {
        self.copies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.copies.is_empty()
    }
}

impl Ledger {
    /// The copies imported for `day` by any of its runs, each once, by where it went. Import
    /// records are kept under their items' dates: those the runs noted, and those around
    /// the day (where a run that ended without a log left its records).
    pub async fn imported_for_day(
        &self,
        connector: &str,
        day: NaiveDate,
        item_dates: &BTreeSet<NaiveDate>,
    ) -> Result<DayImports> {
        let first = day.checked_sub_days(Days::new(DATES_BEFORE)).unwrap_or(day);
        let last = day.checked_add_days(Days::new(DATES_AFTER)).unwrap_or(day);
        let mut dates: BTreeSet<NaiveDate> = item_dates.clone();
        dates.extend(first.iter_days().take_while(|d| *d <= last));
        let mut imported = DayImports::default();
        // Batch by batch, so that a date's records are never in memory all at once.
        for date in dates {
            for batch in self.import_batches(connector, date).await? {
                for record in self.read_batch(&batch).await? {
                    if record.day == day {
                        imported.note(record);
                    }
                }
            }
        }
        Ok(imported)
    }

    /// The day of `connector` as a whole. Its counts are the last run that read the whole
    /// delivery, with every copy any run imported counted as imported once and the failures
    /// a later run cured taken out; None when no run of the day left a log (a day of a
    /// version before run logs is its one status log). A day whose evidence does not add up
    /// is an error that says where.
    pub async fn reconcile(&self, connector: &str, day: NaiveDate) -> Result<Option<StatusLog>> {
        let runs = self.run_logs(connector, day).await?;
        let Some(last) = runs.last() else {
            return self.read_report(connector, day).await;
        };
        let item_dates: BTreeSet<NaiveDate> = runs
            .iter()
            .flat_map(|r| r.item_dates.iter().copied())
            .collect();
        let all_imported = self.imported_for_day(connector, day, &item_dates).await?;
        let run_ids: Vec<String> = runs
            .iter()
            .filter_map(|r| r.run.as_ref().map(|i| i.id.clone()))
            .collect();
        // The last run with no error of the whole day read every record of the delivery. A
        // re-drive read only held items: it is never the base.
        let delivery = |r: &&StatusLog| r.run.as_ref().is_none_or(|i| i.kind == RunKind::Delivery);
        let base = runs
            .iter()
            .rev()
            .filter(delivery)
            .find(|r| r.errors.is_empty());
        let last_delivery = runs.iter().rev().find(delivery).unwrap_or(last);
        let mut log = base.unwrap_or(last_delivery).clone();
        let based_on = log.run.as_ref().map(|r| r.id.clone());
        // The day's counts are of the store and folder that run imported into: a copy in
        // another destination (before `[mailbox]` was pointed elsewhere) is not in this one.
        let place = log
            .run
            .as_ref()
            .map(|r| (r.destination.clone(), r.folder.clone()));
        let imported: Vec<&DayCopy> = all_imported
            .copies()
            .filter(|c| match (&place, &c.destination) {
                (Some((destination, folder)), Some(went)) => {
                    **went == **destination && *c.folder == **folder
                }
                _ => true,
            })
            .collect();
        log.run = None;
        log.runs = run_ids;
        log.completed_at = last.run.as_ref().map_or(last.completed_at, |r| r.ended_at);
        log.complete = self.is_complete(connector, day).await?;
        log.incidents = merged_incidents(&runs);
        log.earlier_errors = runs
            .iter()
            .filter(|r| r.run.as_ref().map(|i| &i.id) != based_on.as_ref())
            .flat_map(|r| r.errors.iter().cloned())
            .filter(|e| e.reason != "busy")
            .collect();
        // Resumed: more than one run, or a run that found an earlier attempt which left no log.
        log.resumed = runs.len() > 1 || runs.iter().any(|r| r.resumed);
        log.mapped_by = BTreeMap::new();
        for copy in &imported {
            *log.mapped_by.entry(copy.mapped_by.to_string()).or_default() += 1;
        }
        log.redriven = Vec::new();
        log.partial_imports = imported
            .iter()
            .filter_map(|c| c.partial.as_deref().cloned())
            .collect();
        log.partial_imports
            .sort_by(|a, b| (&a.mailbox, &a.item_id).cmp(&(&b.mailbox, &b.item_id)));
        let partial = log.partial_imports.len() as u64;
        let total = imported.len() as u64;
        let Some(base) = base else {
            // No run has read the whole delivery yet: what is imported so far, and the rest
            // as the last run left it.
            log.imported = total - partial;
            log.partially_imported = partial;
            log.summary = Some(format!(
                "no run has read the whole delivery of {day} yet; {total} copies are imported so far"
            ));
            return Ok(Some(log));
        };
        // Failures of that run cured since by a later run (a mailbox back, say).
        let imported_copies: HashSet<(&str, &str)> = imported
            .iter()
            .map(|c| (&*c.mailbox, &*c.item_key))
            .collect();
        let (cured, kept): (Vec<_>, Vec<_>) = log.failures.drain(..).partition(|f| {
            let key = ItemKey::new(connector, &f.item_id);
            f.mailbox
                .as_deref()
                .is_some_and(|m| imported_copies.contains(&(m, key.as_str())))
        });
        log.failures = kept;
        log.failed -= cured.len() as u64;
        // Held copies that re-drives since delivered.
        let redrives: Vec<&StatusLog> = runs
            .iter()
            .filter(|r| {
                r.run.as_ref().is_some_and(|i| {
                    let base_run = base.run.as_ref();
                    i.kind == RunKind::Redrive
                        && base_run.is_none_or(|b| {
                            super::runs::came_after(i, b)
                                && i.destination == b.destination
                                && i.folder == b.folder
                        })
                })
            })
            .collect();
        let moved = redriven(&mut log, &redrives, &imported_copies);
        let in_mailbox = base.imported + base.partially_imported;
        // What other runs of the day imported, the base run met as already imported.
        let by_others = total
            .checked_sub(in_mailbox + cured.len() as u64 + moved.delivered)
            .ok_or_else(|| {
                not_adding_up(
                    connector,
                    day,
                    format!(
                        "the run {} imported {in_mailbox} copies and re-drives {} more, the \
                         journal records only {total} for the day",
                        based_on.as_deref().unwrap_or("?"),
                        moved.delivered
                    ),
                )
            })?;
        log.skipped_duplicates =
            base.skipped_duplicates
                .checked_sub(by_others)
                .ok_or_else(|| {
                    not_adding_up(
                        connector,
                        day,
                        format!(
                    "{by_others} copies imported by other runs were not among the {} the run {} \
                     found already imported",
                    base.skipped_duplicates,
                    based_on.as_deref().unwrap_or("?")
                ),
                    )
                })?;
        log.skipped_duplicates += moved.already;
        log.imported = total - partial;
        log.partially_imported = partial;
        if !log.adds_up() {
            return Err(not_adding_up(
                connector,
                day,
                format!(
                    "available for import {} is not imported {} + partially imported {} + \
                     skipped {} + failed {} + held {}",
                    log.available_for_import,
                    log.imported,
                    log.partially_imported,
                    log.skipped_duplicates,
                    log.failed,
                    log.held
                ),
            ));
        }
        Ok(Some(log))
    }
}

impl Ledger {
    /// Every day's reconciliation from `from` to `to`, or why it cannot be had.
    pub async fn reconcile_range(
        &self,
        connector: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Vec<(NaiveDate, std::result::Result<Option<StatusLog>, String>)> {
        let mut days = Vec::new();
        for day in from.iter_days().take_while(|d| *d <= to) {
            let log = self
                .reconcile(connector, day)
                .await
                .map_err(|e| e.to_string());
            days.push((day, log));
        }
        days
    }
}

/// What re-drives did to the base run's held copies.
#[derive(Debug, Default)]
struct Moved {
    /// Copies they imported.
    delivered: u64,
    /// Copies they found in their mailbox already (imported for another day).
    already: u64,
}

/// Moves the held copies of `log` that `redrives` delivered: an item's held copies become
/// the copies the last re-drive of it found (imported, already there, or still held, for
/// the mailboxes its mapping gives now), and the day's copies to import change by as many
/// as the mapping now gives more or fewer. A copy found already there that the day's own
/// records hold (`in_day`: mailbox and item key) was counted by the day already; the
/// catch-all's copies stay as they were.
fn redriven(log: &mut StatusLog, redrives: &[&StatusLog], in_day: &HashSet<(&str, &str)>) -> Moved {
    let mut moved = Moved::default();
    let held_keys: BTreeSet<String> = log.held_copies.iter().map(|h| h.item_key.clone()).collect();
    for key in held_keys {
        let Some(last) = redrives
            .iter()
            .rev()
            .find(|r| r.redriven.iter().any(|d| d.item_key == key))
        else {
            continue;
        };
        let mut delivered = BTreeSet::new();
        let mut already = BTreeSet::new();
        for entry in redrives
            .iter()
            .flat_map(|r| r.redriven.iter())
            .filter(|d| d.item_key == key)
        {
            delivered.extend(entry.delivered.iter().cloned());
            already.extend(entry.already.iter().cloned());
        }
        let already: Vec<&String> = already
            .difference(&delivered)
            .filter(|m| !in_day.contains(&(m.as_str(), key.as_str())))
            .collect();
        let counted = |held: &[Held]| held.iter().filter(|h| h.filed_in.is_none()).count() as u64;
        let (was, still): (Vec<Held>, Vec<Held>) = (
            log.held_copies
                .iter()
                .filter(|h| h.item_key == key)
                .cloned()
                .collect(),
            last.held_copies
                .iter()
                .filter(|h| h.item_key == key)
                .cloned()
                .collect(),
        );
        log.held_copies.retain(|h| h.item_key != key);
        log.held_copies.extend(still.iter().cloned());
        log.held = log.held + counted(&still) - counted(&was);
        let now = delivered.len() as u64 + already.len() as u64 + counted(&still);
        log.available_for_import = log.available_for_import + now - counted(&was);
        moved.delivered += delivered.len() as u64;
        moved.already += already.len() as u64;
    }
    moved
}

fn not_adding_up(connector: &str, day: NaiveDate, why: String) -> Error {
    Error::State(format!(
        "the reconciliation of {connector} {day} does not add up: {why}; its run logs \
         (report --runs) and import records (trace) say what each run did"
    ))
}

/// The incidents of every run, counted together, each with its first example.
fn merged_incidents(runs: &[StatusLog]) -> Vec<Incident> {
    let mut seen: HashMap<(String, String), Incident> = HashMap::new();
    let mut order = Vec::new();
    for incident in runs.iter().flat_map(|r| r.incidents.iter()) {
        let key = (incident.side.clone(), incident.kind.clone());
        match seen.get_mut(&key) {
            Some(known) => known.count += incident.count,
            None => {
                order.push(key.clone());
                seen.insert(key, incident.clone());
            }
        }
    }
    order.into_iter().filter_map(|k| seen.remove(&k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Reason, Redriven};

    fn held(key: &str, mailbox: Option<&str>, filed_in: Option<&str>) -> Held {
        Held {
            item_id: format!("id-{key}"),
            item_key: key.into(),
            source_user: "+447700900199".into(),
            mailbox: mailbox.map(str::to_string),
            reason: Reason::UserMapping,
            detail: String::new(),
            filed_in: filed_in.map(str::to_string),
            kept: format!("held/o2/2026-11-20/{key}.json"),
        }
    }

    fn base(copies: Vec<Held>, imported: u64) -> StatusLog {
        let mut log = StatusLog::new("o2", chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap());
        log.available_for_import = imported;
        log.imported = imported;
        for h in copies {
            log.hold(h);
        }
        assert!(log.adds_up());
        log
    }

    fn redrive(key: &str, delivered: &[&str], already: &[&str], still: Vec<Held>) -> StatusLog {
        let mut log = base(still, 0);
        log.redriven.push(Redriven {
            item_id: format!("id-{key}"),
            item_key: key.into(),
            delivered: delivered.iter().map(|m| m.to_string()).collect(),
            already: already.iter().map(|m| m.to_string()).collect(),
        });
        log
    }

    /// The day as the reconciliation would count it after the re-drives: imported by the
    /// base, plus what the re-drives delivered.
    fn after(log: &mut StatusLog, redrives: &[&StatusLog], in_day: &[(&str, &str)]) -> Moved {
        let in_day: HashSet<(&str, &str)> = in_day.iter().copied().collect();
        let moved = redriven(log, redrives, &in_day);
        log.imported += moved.delivered;
        log.skipped_duplicates += moved.already;
        assert!(log.adds_up(), "{log:?}");
        moved
    }

    #[test]
    fn a_held_copy_delivered_moves_to_imported() {
        let mut log = base(vec![held("k1", None, None)], 3);
        let r = redrive("k1", &["desk3@contoso.com"], &[], vec![]);
        after(&mut log, &[&r], &[]);
        assert_eq!(
            (log.available_for_import, log.imported, log.held),
            (4, 4, 0)
        );
        assert!(log.held_copies.is_empty());
    }

    #[test]
    fn a_copy_the_day_counted_already_is_not_counted_again() {
        // The item went to alice (mapped) and was held for the unmapped desk; the re-drive
        // finds alice's copy there and delivers the desk's.
        let mut log = base(vec![held("k1", None, None)], 1);
        let r = redrive("k1", &["desk3@contoso.com"], &["alice@contoso.com"], vec![]);
        after(&mut log, &[&r], &[("alice@contoso.com", "k1")]);
        assert_eq!(
            (
                log.available_for_import,
                log.imported,
                log.skipped_duplicates
            ),
            (2, 2, 0)
        );
        // Found in a mailbox but imported for another day: a duplicate of this day.
        let mut log = base(vec![held("k1", None, None)], 0);
        let r = redrive("k1", &[], &["alice@contoso.com"], vec![]);
        after(&mut log, &[&r], &[]);
        assert_eq!((log.available_for_import, log.skipped_duplicates), (1, 1));
    }

    #[test]
    fn a_mapping_that_gives_more_copies_adds_them_and_the_catch_all_stays() {
        let mut log = base(vec![held("k1", None, None)], 0);
        let r = redrive("k1", &["a@contoso.com", "b@contoso.com"], &[], vec![]);
        after(&mut log, &[&r], &[]);
        assert_eq!((log.available_for_import, log.imported), (2, 2));

        // Filed in the catch-all meanwhile (imported there), held for its owner.
        let mut log = base(vec![held("k1", None, Some("catch@contoso.com"))], 1);
        let r = redrive("k1", &["desk3@contoso.com"], &[], vec![]);
        after(&mut log, &[&r], &[("catch@contoso.com", "k1")]);
        assert_eq!(
            (log.available_for_import, log.imported, log.held),
            (2, 2, 0)
        );
        assert!(log.held_copies.is_empty());
    }

    #[test]
    fn the_last_redrive_of_an_item_says_what_is_still_held() {
        let desk = || held("k1", None, None);
        let mut log = base(vec![desk(), held("k2", Some("gone@contoso.com"), None)], 0);
        let first = redrive("k1", &[], &[], vec![desk()]);
        let second = redrive("k1", &["desk3@contoso.com"], &[], vec![]);
        after(&mut log, &[&first, &second], &[]);
        assert_eq!((log.imported, log.held), (1, 1));
        assert_eq!(
            log.held_copies[0].item_key, "k2",
            "untouched by any re-drive"
        );
        // A re-drive that still holds it changes nothing.
        let mut log = base(vec![desk()], 0);
        after(&mut log, &[&first], &[]);
        assert_eq!((log.available_for_import, log.held), (1, 1));
    }

    fn record(n: u32, destination: Option<&str>, mailbox: &str) -> ImportRecord {
        ImportRecord {
            item_id: format!("O2-{n}"),
            item_key: ItemKey::new("o2", &format!("O2-{n}")).to_string(),
            day: chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap(),
            destination: destination.map(str::to_string),
            mailbox: mailbox.into(),
            folder: "O2".into(),
            mapped_by: Some("mapping CSV mapping.csv line 2".into()),
            run: Some("run-1".into()),
            staged: format!("staged/{n}"),
            left_out: Vec::new(),
            sha256: "00".into(),
            bytes: 1,
            imported_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_day_counts_each_copy_once_by_its_place_and_shares_its_names() {
        let mut day = DayImports::default();
        let store = Some("imap mail.contoso.com:993");
        for run in 0..3 {
            for n in 0..100 {
                let mut r = record(n, store, &format!("user{}@contoso.com", n % 5));
                r.run = Some(format!("run-{run}"));
                day.note(r);
            }
        }
        assert_eq!(day.len(), 100, "recorded by three runs, imported once");
        // The same item in another mailbox, another folder, another store, or in a record
        // that does not say its store, is another copy.
        day.note(record(0, store, "someone@contoso.com"));
        day.note(ImportRecord {
            folder: "O2 renamed".into(),
            ..record(0, store, "user0@contoso.com")
        });
        day.note(record(0, Some("maildir /var/mail"), "user0@contoso.com"));
        day.note(record(0, None, "user0@contoso.com"));
        assert_eq!(day.len(), 104);
        // A mailbox is held once however many copies name it.
        let user0: Vec<&DayCopy> = day
            .copies()
            .filter(|c| &*c.mailbox == "user0@contoso.com")
            .collect();
        assert!(user0.len() > 20);
        assert!(user0
            .iter()
            .all(|c| Arc::ptr_eq(&c.mailbox, &user0[0].mailbox)));
        assert!(day
            .copies()
            .all(|c| c.mapped_by == "mapping_csv" && c.partial.is_none()));

        let partial = ImportRecord {
            left_out: vec![crate::report::LeftOut {
                name: "video.mp4".into(),
                content_type: "video/mp4".into(),
                bytes: 12_000_000,
                sha256: "11".into(),
                kept: "staged/left-out/video.mp4".into(),
            }],
            mapped_by: None,
            ..record(200, store, "user1@contoso.com")
        };
        day.note(partial.clone());
        let copy = day
            .copies()
            .find(|c| c.partial.is_some())
            .expect("the partial copy");
        assert_eq!(copy.mapped_by, "not_recorded");
        assert_eq!(
            copy.partial.as_deref(),
            Some(&PartialImport {
                item_id: partial.item_id,
                mailbox: partial.mailbox,
                left_out: partial.left_out,
            })
        );
    }
}
