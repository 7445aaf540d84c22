//! Reading a day's partner records ahead of the collection, within the in-flight budget.

use super::budget;
use crate::sources::{ItemStream, Pulled};
use std::sync::Arc;
use tokio::sync::mpsc;

/// A record read from the partner, with the room its files take until its copies take
/// their own.
pub(super) type Read = (
    std::result::Result<Option<Pulled>, crate::sources::SourceError>,
    budget::Room,
);

/// Reads a day's records into a channel until the end, an error, or the day stops listening.
/// A record is read only while the budget has room left, and its files take their room as
/// they are read (the first of them only once it fits in what is left): the records read
/// ahead are within the memory bound, not beside it, however many connectors read at once.
pub(super) async fn read_source(
    mut stream: Box<dyn ItemStream>,
    records: mpsc::Sender<Read>,
    budget: Arc<budget::Budget>,
) {
    loop {
        budget.room().await;
        let (record, mut room) = budget::reading(&budget, stream.next()).await;
        // From here on the record holds what its item keeps.
        room.resize(match &record {
            Ok(Some(Pulled::Item(item))) | Ok(Some(Pulled::TooLarge { item, .. })) => {
                item.content.payload_bytes()
            }
            _ => 0,
        });
        let last = !matches!(record, Ok(Some(_)));
        if records.send((record, room)).await.is_err() || last {
            return;
        }
    }
}

/// Why the task reading the partner's records ended without its last message: its panic's
/// message, or that it was stopped.
pub(super) async fn reader_died(reader: &mut tokio::task::JoinHandle<()>) -> String {
    let why = match reader.await {
        Ok(()) => "it ended without reporting the end of the records".to_string(),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string());
            format!("it panicked: {message}")
        }
        Err(e) => format!("it was stopped: {e}"),
    };
    format!(
        "reading the partner's records failed ({why}); the records after that point were not \
         read, and the next run reads the day again"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::{Attachment, Item};
    use crate::sources::SourceError;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A partner's day of MMS, each with a file of `bytes`, counting the records read.
    struct Mms {
        bytes: usize,
        left: usize,
        read: Arc<AtomicUsize>,
    }

    #[async_trait::async_trait]
    impl ItemStream for Mms {
        async fn next(&mut self) -> std::result::Result<Option<Pulled>, SourceError> {
            if self.left == 0 {
                return Ok(None);
            }
            self.left -= 1;
            // As a source does before it reads a file into memory; the file takes a moment
            // to come in.
            budget::before_reading(self.bytes as u64).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
            let n = self.read.fetch_add(1, Ordering::SeqCst);
            let photo = Attachment {
                name: "photo.jpg".into(),
                content_type: "image/jpeg".into(),
                data: vec![0; self.bytes],
            };
            let item = Item::archived_mms(&format!("MMS-{n}"), chrono::Utc::now(), None, photo);
            Ok(Some(Pulled::Item(Box::new(item))))
        }
    }

    #[tokio::test]
    async fn records_are_read_ahead_only_within_the_budget() {
        let budget = budget::Budget::new(15_000_000);
        let read = Arc::new(AtomicUsize::new(0));
        let stream = Mms {
            bytes: 10_000_000,
            left: 4,
            read: read.clone(),
        };
        let (records, mut pulled) = mpsc::channel(1);
        let reader = tokio::spawn(read_source(Box::new(stream), records, budget.clone()));
        let settle = || tokio::time::sleep(Duration::from_millis(100));
        settle().await;
        // The first record fitted, the second does not fit in what is left: nothing more is
        // read, however long the day waits.
        assert_eq!(read.load(Ordering::SeqCst), 1);
        assert_eq!(budget.used(), 10_000_000);
        settle().await;
        assert_eq!(read.load(Ordering::SeqCst), 1);
        // Its copies take their own room and the record's is given back: the next still does
        // not fit beside the copies.
        let (first, room) = pulled.recv().await.expect("a record");
        assert!(matches!(first, Ok(Some(Pulled::Item(_)))));
        let copies = budget.take_now(13_000_000);
        drop(room);
        settle().await;
        assert_eq!(read.load(Ordering::SeqCst), 1, "the copies fill the room");
        // The copies done, it fits.
        drop(copies);
        settle().await;
        assert_eq!(read.load(Ordering::SeqCst), 2);
        assert_eq!(budget.used(), 10_000_000);
        // Taken to the end, every record's room is given back.
        while let Some((record, room)) = pulled.recv().await {
            drop(room);
            if matches!(record, Ok(None)) {
                break;
            }
        }
        reader.await.unwrap();
        assert_eq!(read.load(Ordering::SeqCst), 4);
        assert_eq!(budget.used(), 0);
    }

    /// Two connectors' readers find a little room left at once: neither reads its large file
    /// past the budget; room given back, one reads its file, and the other waits until its
    /// own fits too.
    #[tokio::test]
    async fn readers_finding_a_little_room_read_their_files_once_they_fit() {
        let budget = budget::Budget::new(15_000_000);
        let others = budget.take_now(14_000_000);
        let read = Arc::new(AtomicUsize::new(0));
        let mut channels = Vec::new();
        let mut readers = Vec::new();
        for _ in 0..2 {
            let stream = Mms {
                bytes: 10_000_000,
                left: 1,
                read: read.clone(),
            };
            let (records, pulled) = mpsc::channel(1);
            readers.push(tokio::spawn(read_source(
                Box::new(stream),
                records,
                budget.clone(),
            )));
            channels.push(pulled);
        }
        let settle = || tokio::time::sleep(Duration::from_millis(100));
        settle().await;
        assert_eq!(
            read.load(Ordering::SeqCst),
            0,
            "a file read past the budget"
        );
        assert_eq!(budget.used(), 14_000_000);
        // Room given back: one reads its file, the other's does not fit beside it.
        drop(others);
        settle().await;
        assert_eq!(read.load(Ordering::SeqCst), 1);
        assert_eq!(budget.used(), 10_000_000);
        // That record taken and its room given back, the other file fits.
        let taken = channels.iter_mut().find_map(|c| c.try_recv().ok());
        let (record, room) = taken.expect("the file read is waiting to be taken");
        assert!(matches!(record, Ok(Some(Pulled::Item(_)))));
        drop(room);
        settle().await;
        assert_eq!(read.load(Ordering::SeqCst), 2);
        assert_eq!(budget.used(), 10_000_000);
        for mut pulled in channels {
            while let Some((record, room)) = pulled.recv().await {
                drop(room);
                if matches!(record, Ok(None)) {
                    break;
                }
            }
        }
        for reader in readers {
            reader.await.unwrap();
        }
        assert_eq!(budget.used(), 0);
    }
}
