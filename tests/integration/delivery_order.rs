//! Delivering a day: the mailboxes with the most copies start first, so that a day's end
//! does not wait on a large mailbox started last.

use crate::support::*;
use async_trait::async_trait;
use chrono::NaiveDate;
use comms_archiver::config::Config;
use comms_archiver::mailbox::{Delivery, Mailbox, MailboxError, MaildirTree};
use comms_archiver::pipeline::Archiver;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A Maildir noting the mailbox of every append, in order.
struct Noting {
    inner: MaildirTree,
    appended: Mutex<Vec<String>>,
}

#[async_trait]
impl Mailbox for Noting {
    async fn contains(&self, d: &Delivery<'_>) -> Result<bool, MailboxError> {
        self.inner.contains(d).await
    }
    async fn append(&self, d: &Delivery<'_>) -> Result<(), MailboxError> {
        self.appended.lock().unwrap().push(d.mailbox.to_string());
        self.inner.append(d).await
    }
    fn describe(&self) -> String {
        "noting maildir".into()
    }
    fn destination(&self) -> String {
        self.inner.destination()
    }
}

/// A generated day for eight mailboxes (whose copies differ in number, and not in the order
/// of their names), in one shard, delivered one mailbox at a time: the mailboxes go in from
/// the one with the most copies to the one with the fewest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mailboxes_with_the_most_copies_go_first() {
    comms_archiver::install_crypto_provider();
    use comms_archiver_testkit::simulator::{Simulator, SimulatorConfig};
    let ws = workspace();
    let dir = ws.path();
    let mut sim_config = SimulatorConfig::new(dir.join("fixtures"));
    sim_config.workload = Some(comms_archiver_testkit::workload::Workload {
        items: 300,
        mailboxes: 8,
        seed: 20261206,
    });
    let (sim_addr, sim_task) = Simulator::new(sim_config)
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let text = crate::graph::generated_day(dir, sim_addr).replace(
        "[archiver]\n",
        "[archiver]\nmax_in_flight = 1\ndelivery_shards = 1\n",
    );
    let config = Config::from_toml(Path::new("order.toml"), &text, &[]).unwrap();
    let noting = Arc::new(Noting {
        inner: MaildirTree::new(dir.join("var/mail")),
        appended: Mutex::new(Vec::new()),
    });
    let archiver = Archiver::from_config(&config)
        .unwrap()
        .with_mailbox(noting.clone());
    let o2 = archiver
        .connectors()
        .iter()
        .find(|c| c.name == "o2")
        .expect("the O2 connector");
    let day = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
    let log = archiver.run_day(o2, day).await.unwrap();
    assert!(log.complete, "{:?}", log.failures);
    sim_task.abort();

    // Mailbox by mailbox, each whole before the next, with its number of copies.
    let appended = noting.appended.lock().unwrap().clone();
    let mut runs: Vec<(String, usize)> = Vec::new();
    for mailbox in appended {
        match runs.last_mut() {
            Some((last, n)) if *last == mailbox => *n += 1,
            _ => {
                assert!(
                    runs.iter().all(|(m, _)| *m != mailbox),
                    "{mailbox} was delivered in two pieces"
                );
                runs.push((mailbox, 1));
            }
        }
    }
    assert!(runs.len() >= 4, "{runs:?}");
    let mut by_name = runs.clone();
    by_name.sort();
    assert_ne!(by_name, runs, "the day would not tell the two orders apart");
    let counts: Vec<usize> = runs.iter().map(|(_, n)| *n).collect();
    assert!(
        counts.windows(2).all(|w| w[0] >= w[1]),
        "mailboxes in the order they went in, with their copies: {runs:?}"
    );
}
