//! Days another daemon holds, as `once` meets them: the days this daemon can take run
//! first, so that daemons sharing a stage collect different connector-days at once; the
//! held days are shared afterwards.

use crate::support::*;
use comms_archiver::config::Config;
use comms_archiver::pipeline::Archiver;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_days_after_one_held_elsewhere_run_while_it_is_held() {
    comms_archiver::install_crypto_provider();
    let ws = workspace();
    let dir = ws.path();
    let text = rooted(
        &std::fs::read_to_string(dir.join("config/demo.toml")).unwrap(),
        dir,
    );
    let config = Config::from_toml(Path::new("demo.toml"), &text, &[]).unwrap();
    let archiver = Arc::new(Archiver::from_config(&config).unwrap());
    let ledger = archiver.ledger().clone();
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let names: Vec<String> = archiver
        .connectors()
        .iter()
        .map(|c| c.name.clone())
        .collect();
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
    let order: Vec<&str> = results.iter().map(|r| r.connector.as_str()).collect();
    assert_eq!(order, names.iter().map(String::as_str).collect::<Vec<_>>());
    let first = results[0].log.as_ref().unwrap();
    assert!(
        !first.complete && first.errors.iter().any(|e| e.reason == "busy"),
        "{first:?}"
    );
    assert!(results[1..].iter().all(|r| r.is_complete()), "{results:?}");
    let again = archiver.run_days(&[day], Some(&names[0])).await;
    assert!(again[0].is_complete(), "{:?}", again[0].log);
}
