//! The day's index and its delivery rounds, against a local stage.

use super::*;
use crate::stage::LocalStage;
use std::sync::Arc;

fn copy(mailbox: &str, key: &str, fresh: bool) -> StagedCopy {
    StagedCopy {
        item_id: format!("id-{key}"),
        item_key: key.into(),
        time: "2026-11-20T10:00:00Z".parse().unwrap(),
        mailbox: mailbox.into(),
        via: Via::Csv { line: 2 },
        mapped_by: "mapping CSV m.csv line 2".into(),
        user: "+447700900123".into(),
        staged: format!("staged/o2/2026-11-20/{mailbox}/{key}.eml"),
        bytes: 10,
        sha256: None,
        left_out: Vec::new(),
        fresh,
    }
}

/// An O2 day collected (with nothing in it) into three shards, on a local stage in `dir`.
async fn collected_in_three_shards(dir: &std::path::Path) -> (Ledger, NaiveDate, Collected) {
    let ledger = Ledger::new(Arc::new(LocalStage::new(dir)));
    let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let index = ledger.collect_index("o2", day, "a1", 3).await.unwrap();
    let collected = index
        .finish(true, false, &StatusLog::new("o2", day))
        .await
        .unwrap();
    (ledger, day, collected)
}

/// A shard's log with something left to retry: its stage went away.
fn left_to_retry(day: NaiveDate) -> StatusLog {
    let mut log = StatusLog::new("o2", day);
    log.errors.push(crate::report::DayError {
        reason: "stage_unavailable".into(),
        detail: "down".into(),
    });
    log
}

#[tokio::test]
async fn a_collection_lists_each_copy_in_its_mailbox_shard_once() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::new(Arc::new(LocalStage::new(dir.path())));
    let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let index = ledger.collect_index("o2", day, "a1", 4).await.unwrap();
    let mailboxes: Vec<String> = (0..20).map(|n| format!("u{n}@contoso.com")).collect();
    for n in 0..600 {
        let mailbox = &mailboxes[n % mailboxes.len()];
        index
            .add(copy(mailbox, &format!("{n:032x}"), true))
            .await
            .unwrap();
    }
    // Listed twice (a repeat): still one copy, and not fresh.
    index
        .add(copy(&mailboxes[0], &format!("{:032x}", 0), false))
        .await
        .unwrap();
    let log = StatusLog::new("o2", day);
    let collected = index.finish(true, false, &log).await.unwrap();
    assert_eq!(collected.shards, 4);
    assert_eq!(
        ledger
            .newest_collection("o2", day)
            .await
            .unwrap()
            .unwrap()
            .attempt,
        "a1"
    );
    let mut total = 0;
    for shard in 0..4 {
        let copies = ledger.shard_copies("o2", day, "a1", shard).await.unwrap();
        for (mailbox, list) in &copies {
            assert_eq!(shard_of(mailbox, 4), shard);
            assert!(list.windows(2).all(|w| w[0].time <= w[1].time));
            total += list.len();
        }
    }
    assert_eq!(total, 600, "every copy once");
    let first = ledger
        .shard_copies("o2", day, "a1", shard_of(&mailboxes[0], 4))
        .await
        .unwrap();
    let zero = first[&mailboxes[0]]
        .iter()
        .find(|c| c.item_key == format!("{:032x}", 0));
    assert!(
        !zero.unwrap().fresh,
        "a copy listed as not fresh is checked"
    );
    // A later collection of the day keeps its shard count, whatever it is asked for.
    let again = ledger.collect_index("o2", day, "a2", 16).await.unwrap();
    assert_eq!(again.shards, 4);
}

#[tokio::test]
async fn a_round_leaves_out_the_shards_delivered_with_nothing_to_retry() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, day, collected) = collected_in_three_shards(dir.path()).await;
    let round = ledger
        .start_round("o2", day, &collected, "r1")
        .await
        .unwrap();
    assert_eq!((round.shards.clone(), round.first), (vec![0, 1, 2], true));
    assert!(ledger
        .start_shard("o2", day, &round, 0, "me")
        .await
        .unwrap());
    assert!(!ledger
        .start_shard("o2", day, &round, 0, "you")
        .await
        .unwrap());
    ledger
        .finish_shard("o2", day, &round, 0, &StatusLog::new("o2", day))
        .await
        .unwrap();
    let retry = left_to_retry(day);
    ledger
        .finish_shard("o2", day, &round, 1, &retry)
        .await
        .unwrap();
    let next = ledger
        .start_round("o2", day, &collected, "r2")
        .await
        .unwrap();
    assert_eq!((next.shards, next.first), (vec![1, 2], false));
    assert_eq!(
        ledger
            .current_round("o2", day)
            .await
            .unwrap()
            .unwrap()
            .round,
        "r2"
    );
}

#[tokio::test]
async fn a_shard_finished_in_an_earlier_round_after_a_later_one_began_carries_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, day, collected) = collected_in_three_shards(dir.path()).await;
    let first = ledger
        .start_round("o2", day, &collected, "r1")
        .await
        .unwrap();
    // The day's holder stops; another takes the day over while a third daemon is still
    // delivering shards 1 and 2 of the first round.
    let later = ledger
        .start_round("o2", day, &collected, "r2")
        .await
        .unwrap();
    assert_eq!(later.shards, vec![0, 1, 2]);
    let mut delivered = StatusLog::new("o2", day);
    delivered.imported = 7;
    ledger
        .finish_shard("o2", day, &first, 1, &delivered)
        .await
        .unwrap();
    let retry = left_to_retry(day);
    ledger
        .finish_shard("o2", day, &first, 2, &retry)
        .await
        .unwrap();
    let settled = ledger.settled_before("o2", day, &later, 1).await.unwrap();
    assert_eq!(settled.map(|log| log.imported), Some(7));
    // Something left to retry, or nothing done before: the later round delivers it.
    assert!(ledger
        .settled_before("o2", day, &later, 2)
        .await
        .unwrap()
        .is_none());
    assert!(ledger
        .settled_before("o2", day, &later, 0)
        .await
        .unwrap()
        .is_none());
    // A round's own record is not an earlier round's.
    ledger
        .finish_shard("o2", day, &later, 0, &StatusLog::new("o2", day))
        .await
        .unwrap();
    assert!(ledger
        .settled_before("o2", day, &later, 0)
        .await
        .unwrap()
        .is_none());
}

/// A run log of `id` that ended at `ended` (its host's clock).
fn run_log(id: &str, ended: &str) -> StatusLog {
    crate::ledger::runs::test_run_log(id, ended.parse().unwrap(), Some(&[]))
}

#[tokio::test]
async fn the_newest_collection_is_the_one_marked_last_whatever_its_name_says() {
    // Collection names begin with their hosts' times: the first here was made on a host
    // minutes ahead, the second on one behind.
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::new(Arc::new(LocalStage::new(dir.path())));
    let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let log = StatusLog::new("o2", day);
    for attempt in ["20261121T061000Z-ahead", "20261121T060500Z-behind"] {
        let index = ledger.collect_index("o2", day, attempt, 3).await.unwrap();
        index.finish(true, false, &log).await.unwrap();
    }
    let newest = ledger.newest_collection("o2", day).await.unwrap().unwrap();
    assert_eq!(newest.attempt, "20261121T060500Z-behind");
    assert_eq!(newest.marked_after, Some(1));
    // A marker of an earlier version, which does not say, comes before both.
    let mut legacy = serde_json::to_value(&newest).unwrap();
    legacy["attempt"] = "20261121T090000Z-legacy".into();
    legacy.as_object_mut().unwrap().remove("marked_after");
    ledger
        .stage
        .put_new(
            &format!(
                "{}20261121T090000Z-legacy/collected.json",
                prefix("o2", day)
            ),
            legacy.to_string().as_bytes(),
        )
        .await
        .unwrap();
    let newest = ledger.newest_collection("o2", day).await.unwrap().unwrap();
    assert_eq!(newest.attempt, "20261121T060500Z-behind");
}

#[tokio::test]
async fn a_run_ended_after_a_collection_when_its_log_was_not_there_at_the_marker() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::new(Arc::new(LocalStage::new(dir.path())));
    let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    // A run on a host an hour ahead ended before the collection; one on a host an hour
    // behind ended after it.
    let before = run_log("run-ahead", "2099-01-01T00:00:00Z");
    ledger.write_run_log(&before).await.unwrap();
    let index = ledger.collect_index("o2", day, "a1", 3).await.unwrap();
    let collected = index
        .finish(true, false, &StatusLog::new("o2", day))
        .await
        .unwrap();
    let after = run_log("run-behind", "2000-01-01T00:00:00Z");
    assert!(!collected.ended_after(&before));
    assert!(collected.ended_after(&after));
    // A marker of an earlier version is compared by time.
    let legacy = Collected {
        runs_ended: None,
        ..collected
    };
    assert!(legacy.ended_after(&before) && !legacy.ended_after(&after));
}
