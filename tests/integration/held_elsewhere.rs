//! Days another daemon holds, as `once` meets them: the days this daemon can take run
//! first, so that daemons sharing a stage collect different connector-days at once; the
//! held days are shared afterwards. Whatever a shutdown keeps the run from is reported open.

use crate::support::gated::GatedMaildir;
use crate::support::*;
use comms_archiver::pipeline::{Archiver, DayResult};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

fn day() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap()
}

/// The archiver's connectors, by name, in their order.
fn connector_names(archiver: &Archiver) -> Vec<String> {
    archiver
        .connectors()
        .iter()
        .map(|c| c.name.clone())
        .collect()
}

/// The run's results name every connector's day, in the order the connectors were asked.
fn in_order_asked(results: &[DayResult], names: &[String]) {
    let order: Vec<&str> = results.iter().map(|r| r.connector.as_str()).collect();
    assert_eq!(order, names.iter().map(String::as_str).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_days_after_one_held_elsewhere_run_while_it_is_held() {
    comms_archiver::install_crypto_provider();
    let ws = workspace();
    let archiver = Arc::new(Archiver::from_config(&demo_config(ws.path())).unwrap());
    let ledger = archiver.ledger().clone();
    let day = day();
    let names = connector_names(&archiver);
    assert!(names.len() >= 2, "{names:?}");

    // Another daemon, on another host, holds the first connector's day (its lease runs for
    // minutes): `once` runs the other connectors' days meanwhile.
    let held = ledger
        .acquire_day(&names[0], day, "elsewhere/1/1")
        .await
        .unwrap()
        .expect("the day is free");
    let run = tokio::spawn({
        let archiver = archiver.clone();
        async move { archiver.run_days(&[day], None).await }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut done = true;
        for name in &names[1..] {
            done &= ledger.is_complete(name, day).await.unwrap();
        }
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the days after {}'s waited for it: complete {:?}",
            names[0],
            futures::future::join_all(names.iter().map(|n| ledger.is_complete(n, day))).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!run.is_finished(), "the held day is still to be shared");
    assert!(!ledger.is_complete(&names[0], day).await.unwrap());

    // The holder lets the day go without collecting it: this run reports it open, busy, in
    // the order the days were asked; the next run takes it.
    ledger.release(held).await.unwrap();
    let results = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run ends once the holder lets the day go")
        .unwrap();
    in_order_asked(&results, &names);
    let first = results[0].log.as_ref().unwrap();
    assert!(
        !first.complete && first.errors.iter().any(|e| e.reason == "busy"),
        "{first:?}"
    );
    assert!(results[1..].iter().all(|r| r.is_complete()), "{results:?}");
    let again = archiver.run_days(&[day], Some(&names[0])).await;
    assert!(again[0].is_complete(), "{:?}", again[0].log);
}

/// A daemon on another host took the first connector's day and died without letting it go:
/// its lease is never renewed. `once` does not take it on the time written in it (that
/// host's clock may be anywhere): it waits until it has seen the lease unrenewed for a
/// lease's life, then takes the day over and runs it, rather than reporting it busy to
/// every run after (each a new process that would wait as long again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_whose_holder_died_is_taken_over_and_run() {
    comms_archiver::install_crypto_provider();
    let ws = workspace();
    let archiver = Archiver::from_config(&demo_config(ws.path()))
        .unwrap()
        .with_lease_secs(2);
    let ledger = archiver.ledger().clone();
    let names = connector_names(&archiver);
    let _dead = ledger
        .acquire_day(&names[0], day(), "elsewhere/1/1")
        .await
        .unwrap()
        .expect("the day is free");
    let results = tokio::time::timeout(Duration::from_secs(120), archiver.run_days(&[day()], None))
        .await
        .expect("the run ends");
    in_order_asked(&results, &names);
    assert!(
        results.iter().all(|r| r.is_complete()),
        "{:?}",
        results[0].log
    );
    assert!(ledger.is_complete(&names[0], day()).await.unwrap());
}

/// `once` by two daemons: while one delivers the first connector's day, the other runs the
/// second's to its end. The first does not run that day again when it gets there (it was not
/// complete when the run began): the day has one run, and the other's reconciliation is the
/// first's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_another_daemon_finished_during_the_run_is_not_run_again() {
    comms_archiver::install_crypto_provider();
    let ws = workspace();
    let config = demo_config(ws.path());
    let (gated, open) = GatedMaildir::new(ws.path().join("var/mail"), 0);
    let first = Arc::new(
        Archiver::from_config(&config)
            .unwrap()
            .with_mailbox(gated.clone()),
    );
    let names = connector_names(&first);
    let run = tokio::spawn({
        let first = first.clone();
        async move { first.run_days(&[day()], None).await }
    });
    gated.until_held(Duration::from_secs(60)).await;

    let other = Archiver::from_config(&config).unwrap();
    let theirs = other.run_days(&[day()], Some(&names[1])).await;
    assert!(theirs[0].is_complete(), "{:?}", theirs[0].log);
    open.send(true).unwrap();
    let results = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the first daemon's run ends")
        .unwrap();

    assert!(results.iter().all(|r| r.is_complete()), "{results:?}");
    let runs = first.ledger().run_logs(&names[1], day()).await.unwrap();
    assert_eq!(runs.len(), 1, "{} ran once: {runs:?}", names[1]);
    let answer = results[1].log.as_ref().unwrap();
    assert_eq!(answer.imported, theirs[0].log.as_ref().unwrap().imported);
    assert!(
        answer
            .summary
            .as_deref()
            .is_some_and(|s| s.contains("delivered by another comms-archiver")),
        "{answer:?}"
    );
}

/// `once` asked to stop while it runs the days it could take: the days it did not get to (the
/// ones after the day under way, and the one another daemon holds) are reported open, not
/// left out, so that the run's exit code says work is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn days_a_shutdown_kept_the_run_from_are_reported_open() {
    comms_archiver::install_crypto_provider();
    let ws = workspace();
    let (gated, open) = GatedMaildir::new(ws.path().join("var/mail"), 0);
    let (stop, stopping) = watch::channel(false);
    let archiver = Arc::new(
        Archiver::from_config(&demo_config(ws.path()))
            .unwrap()
            .with_mailbox(gated.clone())
            .with_shutdown(stopping),
    );
    let names = connector_names(&archiver);
    let held = archiver
        .ledger()
        .acquire_day(&names[0], day(), "elsewhere/1/1")
        .await
        .unwrap()
        .expect("the day is free");
    let run = tokio::spawn({
        let archiver = archiver.clone();
        async move { archiver.run_days(&[day()], None).await }
    });
    gated.until_held(Duration::from_secs(60)).await;
    stop.send(true).unwrap();
    open.send(true).unwrap();
    let results = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run stops")
        .unwrap();

    in_order_asked(&results, &names);
    // The day under way (the second) ends as its copies in flight let it; the others were
    // not reached.
    for r in results.iter().filter(|r| r.connector != names[1]) {
        let log = r.log.as_ref().unwrap();
        assert!(
            !log.complete && log.errors.iter().any(|e| e.reason == "interrupted"),
            "{}: {log:?}",
            r.connector
        );
    }
    archiver.ledger().release(held).await.unwrap();
}
