//! The daemon's schedule under tokio's paused time: days go by in milliseconds.

use crate::support::daemon::{at, d, Behaviour, Scaffold};
use chrono::NaiveDate;
use comms_archiver::scheduler::Clock;
use std::time::Duration;

#[tokio::test(start_paused = true)]
async fn a_daemon_down_for_three_days_catches_up_in_order_then_wakes_daily() {
    let mut daemon = Scaffold::new(at(2026, 11, 21, 5), &[("o2", Behaviour::Deliver)]);
    // The last day finished before the outage.
    daemon
        .archiver
        .ledger()
        .complete_day("o2", d(2026, 11, 17))
        .await
        .unwrap();
    daemon.start("");
    daemon.until_opened(5).await;
    let opened = daemon.stop().await;

    let days: Vec<NaiveDate> = opened.iter().map(|(day, _)| *day).collect();
    assert_eq!(
        &days[..5],
        &[
            d(2026, 11, 18),
            d(2026, 11, 19),
            d(2026, 11, 20),
            d(2026, 11, 21),
            d(2026, 11, 22)
        ]
    );
    assert!(
        opened[..3]
            .iter()
            .all(|(_, when)| *when == at(2026, 11, 21, 5)),
        "{opened:?}"
    );
    assert_eq!(
        opened[3].1,
        at(2026, 11, 22, 4),
        "the next wake is 04:00 UTC"
    );
    assert_eq!(opened[4].1, at(2026, 11, 23, 4));
    let checkpoint = daemon.archiver.ledger().checkpoint("o2").await.unwrap();
    assert!(checkpoint >= Some(d(2026, 11, 21)));
}

#[tokio::test(start_paused = true)]
async fn a_dst_change_neither_shifts_nor_repeats_a_day() {
    // British Summer Time ends on Sunday 2026-10-25; the wake is 04:00 London time.
    let mut daemon = Scaffold::new(at(2026, 10, 23, 12), &[("o2", Behaviour::Deliver)]);
    daemon
        .archiver
        .ledger()
        .complete_day("o2", d(2026, 10, 22))
        .await
        .unwrap();
    daemon.start("time_zone = \"Europe/London\"");
    daemon.until_opened(4).await;
    let opened = daemon.stop().await;

    assert_eq!(
        &opened[..4],
        &[
            (d(2026, 10, 23), at(2026, 10, 24, 3)),
            (d(2026, 10, 24), at(2026, 10, 25, 4)),
            (d(2026, 10, 25), at(2026, 10, 26, 4)),
            (d(2026, 10, 26), at(2026, 10, 27, 4)),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn one_partner_down_does_not_hold_back_another() {
    let mut daemon = Scaffold::new(
        at(2026, 11, 21, 5),
        &[("down", Behaviour::Hang), ("up", Behaviour::Deliver)],
    );
    daemon.start("");
    let ledger = daemon.archiver.ledger().clone();
    for _ in 0..600 {
        if ledger.checkpoint("up").await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        ledger.checkpoint("up").await.unwrap(),
        Some(d(2026, 11, 20))
    );
    assert_eq!(ledger.checkpoint("down").await.unwrap(), None);

    // The hung partner cannot keep the daemon from stopping: it gets the grace period.
    let stopped_at = daemon.clock.now();
    daemon.stop().await;
    assert!(daemon.clock.now() - stopped_at <= chrono::Duration::seconds(6));
}

#[tokio::test(start_paused = true)]
async fn an_open_day_is_retried_with_backoff_before_the_next_wake() {
    let mut daemon = Scaffold::new(at(2026, 11, 21, 5), &[("o2", Behaviour::LateBy(2))]);
    daemon.start("");
    daemon.until_opened(3).await;
    let opened = daemon.stop().await;

    let five = at(2026, 11, 21, 5);
    let times: Vec<i64> = opened
        .iter()
        .map(|(_, t)| (*t - five).num_minutes())
        .collect();
    assert_eq!(
        &times[..3],
        &[0, 5, 20],
        "retried after 5 and then 15 minutes"
    );
    assert_eq!(
        daemon.archiver.ledger().checkpoint("o2").await.unwrap(),
        Some(d(2026, 11, 20))
    );
}

/// Each wake tries the held copies of the catch-up window again: copies for a mailbox the
/// admin had not created yet are delivered at the first wake after it exists, once, and a
/// day with nothing held is not re-driven again.
#[tokio::test(start_paused = true)]
async fn each_wake_redrives_the_held_copies_of_the_window() {
    use std::sync::atomic::Ordering;
    let mut daemon = Scaffold::new(at(2026, 11, 21, 5), &[("o2", Behaviour::Deliver)]);
    daemon.mailboxes_missing.store(true, Ordering::SeqCst);
    daemon.start("");
    daemon.until_opened(1).await;
    let ledger = daemon.archiver.ledger().clone();
    let day = d(2026, 11, 20);
    let held = |ledger: comms_archiver::ledger::Ledger| async move {
        match ledger.reconcile("o2", day).await.unwrap() {
            Some(log) if log.complete => Some(log.held),
            _ => None,
        }
    };
    let mut minutes = 0;
    while held(ledger.clone()).await != Some(2) {
        tokio::time::sleep(Duration::from_secs(60)).await;
        minutes += 1;
        assert!(
            minutes < 60 * 24,
            "the first day never finished with its copies held"
        );
    }

    // The admin creates the mailbox; the next wake (04:00 on the 22nd) delivers.
    daemon.mailboxes_missing.store(false, Ordering::SeqCst);
    daemon.until_opened(2).await;
    while held(ledger.clone()).await != Some(0) {
        tokio::time::sleep(Duration::from_secs(60)).await;
        minutes += 1;
        assert!(
            minutes < 3 * 60 * 24,
            "the held copies were never delivered"
        );
    }
    let delivered_at = daemon.clock.now();
    assert!(delivered_at >= at(2026, 11, 22, 4), "{delivered_at}");
    // One more wake: nothing is held, so no re-drive runs.
    daemon.until_opened(3).await;
    daemon.stop().await;
    let runs = ledger.run_logs("o2", day).await.unwrap();
    let kinds: Vec<_> = runs.iter().map(|r| r.run.as_ref().unwrap().kind).collect();
    use comms_archiver::report::RunKind::{Delivery, Redrive};
    assert_eq!(kinds, [Delivery, Redrive, Redrive], "{runs:?}");
    assert_eq!(
        runs[1].held, 2,
        "the first wake's re-drive found the mailbox missing"
    );
    assert_eq!(runs[2].imported, 2);
    let day_log = ledger.reconcile("o2", day).await.unwrap().unwrap();
    assert_eq!((day_log.imported, day_log.held), (2, 0));
    assert!(day_log.adds_up());
}

/// A day of the window that another daemon holds (on another host, renewing its lease) does
/// not hold back the days after it: they are run while it is held, and the checkpoint stays
/// behind it. However long the holder keeps renewing, the day is not taken from it; once it
/// stops (it died without letting the day go), the day is taken over and run here.
#[tokio::test(start_paused = true)]
async fn a_day_another_daemon_holds_lets_the_days_after_it_run() {
    let mut daemon = Scaffold::new(at(2026, 11, 21, 5), &[("o2", Behaviour::Deliver)]);
    let ledger = daemon.archiver.ledger().clone();
    ledger.complete_day("o2", d(2026, 11, 17)).await.unwrap();
    let mut held = ledger
        .acquire_day("o2", d(2026, 11, 18), "elsewhere/1/1")
        .await
        .unwrap()
        .expect("the day is free");
    let holder = tokio::spawn({
        let ledger = ledger.clone();
        async move {
            loop {
                tokio::time::sleep(ledger.lease_renew_every()).await;
                assert!(
                    ledger.renew(&mut held).await.unwrap(),
                    "the lease was taken"
                );
            }
        }
    });
    daemon.start("");
    // Twenty minutes: the lease's life (300 s) four times over.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    let days: Vec<NaiveDate> = daemon
        .opened
        .lock()
        .unwrap()
        .iter()
        .map(|(day, _)| *day)
        .collect();
    assert_eq!(
        days,
        [d(2026, 11, 19), d(2026, 11, 20)],
        "the days after the held one ran, and the held one was left to its holder"
    );
    for day in [d(2026, 11, 19), d(2026, 11, 20)] {
        assert!(ledger.is_complete("o2", day).await.unwrap(), "{day}");
    }
    assert!(!ledger.is_complete("o2", d(2026, 11, 18)).await.unwrap());
    assert_eq!(
        ledger.checkpoint("o2").await.unwrap(),
        Some(d(2026, 11, 17)),
        "the checkpoint waits for the held day"
    );

    // The holder dies: its lease is no longer renewed, nor let go.
    holder.abort();
    let _ = holder.await;
    for _ in 0..180 {
        if ledger.is_complete("o2", d(2026, 11, 18)).await.unwrap() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    let opened = daemon.stop().await;
    assert!(
        ledger.is_complete("o2", d(2026, 11, 18)).await.unwrap(),
        "the silent holder's day was taken over: {opened:?}"
    );
    assert_eq!(
        ledger.checkpoint("o2").await.unwrap(),
        Some(d(2026, 11, 20))
    );
}
