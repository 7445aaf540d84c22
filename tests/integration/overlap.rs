//! Deliveries that overlap: an item a partner sends on two days is imported once.

use crate::recovery::Counting;
use crate::support::*;
use async_trait::async_trait;
use chrono::{NaiveDate, TimeZone, Utc};
use comms_archiver::item::{Content, Direction, Item, Participant, Role};
use comms_archiver::mailbox::MaildirTree;
use comms_archiver::mapping::Mapper;
use comms_archiver::pipeline::{Archiver, Connector};
use comms_archiver::sources::Partner;
use comms_archiver::sources::{ItemStream, Pulled, Source, SourceError};
use comms_archiver::stage::LocalStage;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A partner that delivers a late item of the 19th on the 19th and again on the 20th (its
/// window overlaps), each day with one item of its own.
struct Overlapping;

struct Listed(Vec<Item>);

pub(crate) fn sms(id: &str, time: chrono::DateTime<Utc>) -> Item {
    Item {
        partner_id: id.into(),
        time,
        direction: Direction::Outbound,
        conversation: None,
        participants: vec![Participant {
            role: Some(Role::From),
            phone: Some("+447700900001".into()),
            email: Some("user1@contoso.com".into()),
            archived: true,
            ..Default::default()
        }],
        content: Content::Sms {
            text: format!("message {id}"),
        },
    }
}

#[async_trait]
impl Source for Overlapping {
    async fn open(&self, day: NaiveDate) -> Result<Box<dyn ItemStream>, SourceError> {
        let late = Utc.with_ymd_and_hms(2026, 11, 19, 23, 58, 30).unwrap();
        let own = day.and_hms_opt(12, 0, 0).unwrap().and_utc();
        Ok(Box::new(Listed(vec![
            sms(&format!("OWN-{day}"), own),
            sms("LATE-1", late),
        ])))
    }

    fn describe(&self) -> String {
        "overlapping".into()
    }
}

#[async_trait]
impl ItemStream for Listed {
    async fn next(&mut self) -> Result<Option<Pulled>, SourceError> {
        Ok(self.0.pop().map(|item| Pulled::Item(Box::new(item))))
    }
}

/// Runs the overlapping partner's days in the order given; returns the imports and skipped
/// duplicates of each day and the appends the mailbox saw.
async fn overlapping_days(
    dir: &Path,
    days: &[u32],
    between: impl Fn(usize),
) -> (Vec<(u64, u64)>, usize) {
    let appended = Arc::new(AtomicUsize::new(0));
    let mut logs = Vec::new();
    for (n, &d) in days.iter().enumerate() {
        let connector = Connector {
            name: "o2".into(),
            partner: Partner::named("telemessage-o2").unwrap(),
            folder: FOLDER.into(),
            source: Box::new(Overlapping),
            mapper: Mapper::new(None, true, vec!["contoso.com".into()]),
        };
        let archiver = Archiver::new(
            vec![connector],
            Arc::new(LocalStage::new(dir.join("stage"))),
            Arc::new(Counting {
                inner: MaildirTree::new(dir.join("mail")),
                appended: appended.clone(),
            }),
            10 * 1024 * 1024,
        );
        let day = NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        let log = archiver
            .run_day(&archiver.connectors()[0], day)
            .await
            .unwrap();
        assert!(log.complete && log.adds_up(), "{log:?}");
        logs.push((log.imported, log.skipped_duplicates));
        between(n);
    }
    (logs, appended.load(Ordering::SeqCst))
}

#[tokio::test]
async fn an_item_delivered_on_two_days_is_imported_once() {
    // In order: the 20th finds the late item of the 19th imported already.
    let dir = tempfile::tempdir().unwrap();
    let (logs, appended) = overlapping_days(dir.path(), &[19, 20], |_| {}).await;
    assert_eq!(logs, [(2, 0), (1, 1)]);
    assert_eq!(appended, 3);

    // Out of order (a catch-up or a rerun): the same.
    let dir = tempfile::tempdir().unwrap();
    let (logs, appended) = overlapping_days(dir.path(), &[20, 19], |_| {}).await;
    assert_eq!(logs, [(2, 0), (1, 1)]);
    assert_eq!(appended, 3);

    // The 19th's run died after importing, before its journal was written: the staged message
    // says the copy may be in the mailbox, and the mailbox has it.
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("stage/ledger/o2/journal");
    let (logs, appended) = overlapping_days(dir.path(), &[19, 20], |n| {
        if n == 0 {
            std::fs::remove_dir_all(&journal).unwrap();
        }
    })
    .await;
    assert_eq!(logs, [(2, 0), (1, 1)]);
    assert_eq!(appended, 3);
    let staged = |date: &str| {
        let path = dir
            .path()
            .join(format!("stage/staged/o2/{date}/user1@contoso.com"));
        std::fs::read_dir(path).unwrap().count()
    };
    assert_eq!(
        (staged("2026-11-19"), staged("2026-11-20")),
        (2, 1),
        "the late item is staged once, under its own date"
    );
}
