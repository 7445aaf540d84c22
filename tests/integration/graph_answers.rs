//! Answers Graph says are successes but that cannot be used: a gateway's sign-in page in
//! Graph's place, JSON without what Graph sends, an answer cut short. None is taken for the
//! success it claims: the copy fails, is looked for in its mailbox, and lands once, whole.

use crate::graph::{day, graph_config};
use crate::graph_fake::{FakeGraph, Message, Route, Spoiled};
use crate::graph_files::{file, graph_on, mms, to_alice, File};
use comms_archiver::mailbox::{Mailbox, MailboxError};

/// The received messages holding the item key `key`, and the drafts in the mailbox.
fn received(graph: &FakeGraph, key: &str) -> (Vec<Message>, usize) {
    let (messages, drafts) = everything(graph);
    let messages = messages
        .into_iter()
        .filter(|m| m.properties.values().any(|v| v == key))
        .collect();
    (messages, drafts)
}

/// Every received message, and how many drafts there are.
fn everything(graph: &FakeGraph) -> (Vec<Message>, usize) {
    let (drafts, messages): (Vec<Message>, Vec<Message>) =
        graph.messages().into_iter().partition(|m| m.is_draft);
    (messages, drafts.len())
}

/// The copy `key` is in its mailbox once, with exactly `files`, and nothing else is there:
/// no draft, no other message.
fn landed_once(graph: &FakeGraph, key: &str, files: &[File], case: &str) {
    let (messages, drafts) = received(graph, key);
    assert_eq!((messages.len(), drafts), (1, 0), "{case}");
    assert_eq!(
        same_files(&messages[0].attachments, files),
        Ok(()),
        "{case}"
    );
    assert_eq!(everything(graph).0.len(), 1, "{case}: nothing else");
}

/// Whether a message's files are `want`, byte for byte (the name of one that differs).
/// Alice's mailbox in a fake Graph, each request given up after a second: what the tests of
/// answers that come too late or never wait for.
async fn alice_answering_within_a_second() -> (
    std::sync::Arc<FakeGraph>,
    comms_archiver::mailbox::graph::GraphMailboxes,
    tokio::task::JoinHandle<()>,
) {
    let graph = FakeGraph::new(&["alice.smith@contoso.com"]);
    let (mailboxes, server) = crate::graph_files::graph_built(
        &graph,
        comms_archiver::mailbox::graph::DEFAULT_UPLOADS,
        std::time::Duration::from_secs(1),
    )
    .await;
    (graph, mailboxes, server)
}

fn same_files(got: &[File], want: &[File]) -> Result<(), String> {
    let (mut got, mut want) = (got.to_vec(), want.to_vec());
    got.sort();
    want.sort();
    match got == want {
        true => Ok(()),
        false => Err(format!(
            "files {:?}, wanted {:?}",
            got.iter().map(|f| &f.0).collect::<Vec<_>>(),
            want.iter().map(|f| &f.0).collect::<Vec<_>>()
        )),
    }
}

/// Each request whose answer the import reads, its answer spoiled each way: the import fails
/// as unknown (never a success, never a refusal that would hold the copy as if Graph had
/// said no); looked for, the message is found exactly when it was made; imported again when
/// it was not, it is in its folder once, with its body and every file, and no draft is left
/// (one whose own answer was spoiled is found among the Drafts by its Message-ID).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoiled_success_fails_the_copy_and_it_lands_once_whole() {
    // A text file stays in the MIME, so Graph parses it into the draft and its attachments
    // are listed; the photo goes with the message.
    let notes = ("notes.txt".to_string(), b"call notes\r\n".repeat(100));
    let files = vec![notes, file("a.jpg", 9_000, 4)];
    for route in [
        Route::Folders,
        Route::Draft,
        Route::Attachments,
        Route::Message,
    ] {
        for spoiled in [Spoiled::Html, Spoiled::Empty, Spoiled::Cut] {
            let case = format!("{route:?} answered {spoiled:?}");
            let graph = FakeGraph::new(&["alice.smith@contoso.com"]);
            let (mailboxes, server) = graph_on(&graph).await;
            let (key, time, message) = mms(&files);
            let delivery = to_alice(&key, time, &message);
            graph.spoil.lock().unwrap().push((route, spoiled));
            let failed = mailboxes.append(&delivery).await;
            assert!(
                matches!(failed, Err(MailboxError::Unavailable(_))),
                "{case}: {failed:?}"
            );
            assert!(graph.spoil.lock().unwrap().is_empty(), "{case}: spoiled");
            let made = route == Route::Message;
            assert_eq!(
                mailboxes.contains(&delivery).await.unwrap(),
                made,
                "{case}: found exactly when it was made"
            );
            if !made {
                mailboxes.append(&delivery).await.unwrap();
            }
            let (messages, drafts) = received(&graph, key.as_str());
            assert_eq!(messages.len(), 1, "{case}: once");
            let m = &messages[0];
            assert!(
                !m.json["subject"].as_str().unwrap_or_default().is_empty(),
                "{case}: with its subject"
            );
            assert!(
                !m.json["body"]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .is_empty(),
                "{case}: with its body"
            );
            assert_eq!(same_files(&m.attachments, &files), Ok(()), "{case}");
            assert_eq!(drafts, 0, "{case}: drafts left");
            server.abort();
        }
    }
}

/// A search whose answer is spoiled is an error, never "not there": taken for "not there",
/// the message would be imported a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoiled_search_is_not_taken_for_a_message_missing() {
    let graph = FakeGraph::new(&["alice.smith@contoso.com"]);
    let (mailboxes, server) = graph_on(&graph).await;
    let (key, time, message) = mms(&[]);
    let delivery = to_alice(&key, time, &message);
    mailboxes.append(&delivery).await.unwrap();
    for spoiled in [Spoiled::Html, Spoiled::Empty, Spoiled::Cut] {
        graph.spoil.lock().unwrap().push((Route::Search, spoiled));
        let found = mailboxes.contains(&delivery).await;
        assert!(
            matches!(found, Err(MailboxError::Unavailable(_))),
            "{spoiled:?}: {found:?}"
        );
        assert!(mailboxes.contains(&delivery).await.unwrap(), "{spoiled:?}");
    }
    server.abort();
}

/// From outside, a whole day: the demo day through a Graph whose answers are spoiled here
/// and there (a folder lookup, drafts, a message made, a search). The day's first run fails
/// the copies concerned and says the day is not complete; its next run finds those whose
/// message was made and imports the others; every message is in its folder once, no draft is
/// left, and each connector's reconciled day adds up to the copies its first run met.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_through_spoiled_answers_is_finished_by_its_next_run() {
    let ws = crate::support::workspace();
    let graph = FakeGraph::new(crate::support::MAILBOXES);
    let (port, server) = graph.start().await;
    graph.spoil.lock().unwrap().extend([
        (Route::Folders, Spoiled::Cut),
        (Route::Draft, Spoiled::Html),
        (Route::Draft, Spoiled::Empty),
        (Route::Message, Spoiled::Html),
        (Route::Message, Spoiled::Cut),
    ]);
    let config = graph_config(ws.path(), port);
    let first = crate::support::run_in_process(&config, day()).await;
    // Five spoiled answers fail up to five copies (two may fall on one copy: its folder
    // lookup and its draft go side by side), each as an import whose effect is unknown.
    let failures: Vec<_> = first.values().flat_map(|l| l.failures.clone()).collect();
    let failed: Vec<_> = failures
        .iter()
        .filter(|f| f.reason == comms_archiver::report::Reason::ImportError)
        .collect();
    assert!((1..=5).contains(&failed.len()), "{first:#?}");
    for f in &failed {
        assert!(
            f.detail
                .contains("looked for in its mailbox before it is imported again"),
            "{}",
            f.detail
        );
    }
    assert!(first.values().any(|l| !l.complete));
    assert!(graph.spoil.lock().unwrap().is_empty());

    // The next run looks for the failed copies (a search spoiled on the way) and finishes.
    graph
        .spoil
        .lock()
        .unwrap()
        .push((Route::Search, Spoiled::Html));
    let mut runs = 1;
    loop {
        let logs = crate::support::run_in_process(&config, day()).await;
        runs += 1;
        if logs.values().all(|l| l.complete) {
            break;
        }
        assert!(runs < 4, "not finished after {runs} runs: {logs:#?}");
    }
    let (messages, drafts) = everything(&graph);
    assert_eq!(messages.len(), 37, "every message, once");
    assert_eq!(
        drafts, 0,
        "no draft left, not even those whose answers were spoiled"
    );
    let archiver = comms_archiver::pipeline::Archiver::from_config(&config).unwrap();
    for (connector, log) in &first {
        let whole = archiver
            .ledger()
            .reconcile(connector, day())
            .await
            .unwrap()
            .unwrap();
        assert!(whole.complete && whole.adds_up(), "{connector}: {whole:#?}");
        assert_eq!(
            whole.imported + whole.skipped_duplicates,
            log.imported + log.skipped_duplicates + log.failed,
            "{connector}"
        );
    }
    server.abort();
}

/// A file Graph lists in the draft with no bytes to post again (an attached message) is a
/// refusal that names its type, not a message made without it; nothing is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_file_without_bytes_is_refused_by_name() {
    let graph = FakeGraph::new(&["alice.smith@contoso.com"]);
    graph
        .items_in_drafts
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (mailboxes, server) = graph_on(&graph).await;
    let notes = ("notes.txt".to_string(), b"call notes\r\n".repeat(100));
    let (key, time, message) = mms(&[notes]);
    let refused = mailboxes.append(&to_alice(&key, time, &message)).await;
    match refused {
        Err(MailboxError::Rejected { reason, .. }) => {
            assert!(
                reason.contains("#microsoft.graph.itemAttachment"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(graph.messages().is_empty(), "no message, no draft");
    server.abort();
}

/// An import cut off after its draft was made (the daemon killed) leaves the draft among the
/// Drafts, where eDiscovery would find the message a second time: the copy's next attempt,
/// which looks for it first, deletes that draft and imports the message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_left_by_an_import_cut_off_goes_when_the_copy_is_looked_for() {
    use std::sync::atomic::Ordering;
    let graph = FakeGraph::new(&["alice.smith@contoso.com"]);
    // Slow answers: the draft is made as its request is read, and read back a second later
    // (a text file stays in it), so it is there while the import is cut off.
    graph.latency_ms.store(500, Ordering::SeqCst);
    let (mailboxes, server) = graph_on(&graph).await;
    let mailboxes = std::sync::Arc::new(mailboxes);
    let notes = ("notes.txt".to_string(), b"call notes\r\n".repeat(100));
    let (key, time, message) = mms(std::slice::from_ref(&notes));
    let cut_off = {
        let (mailboxes, key, message) = (mailboxes.clone(), key.clone(), message.clone());
        tokio::spawn(async move {
            let _ = mailboxes.append(&to_alice(&key, time, &message)).await;
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while everything(&graph).1 == 0 {
        assert!(std::time::Instant::now() < deadline, "no draft was made");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    cut_off.abort();
    let _ = cut_off.await;
    let (messages, drafts) = everything(&graph);
    assert_eq!((messages.len(), drafts), (0, 1), "the draft is left");

    graph.latency_ms.store(0, Ordering::SeqCst);
    let delivery = to_alice(&key, time, &message);
    assert!(!mailboxes.contains(&delivery).await.unwrap());
    assert_eq!(everything(&graph).1, 0, "the draft went with the lookup");
    mailboxes.append(&delivery).await.unwrap();
    let (messages, drafts) = received(&graph, key.as_str());
    assert_eq!((messages.len(), drafts), (1, 0));
    assert_eq!(same_files(&messages[0].attachments, &[notes]), Ok(()));
    server.abort();
}

/// A message whose last file fails, and whose removal fails too (Graph failing for a while),
/// is left in its folder short of that file: it is never found as the copy imported (it gets
/// its item key only once whole), and the copy's next attempt removes it and imports the
/// message whole, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_left_short_of_a_file_is_not_taken_for_the_copy() {
    use std::sync::atomic::Ordering;
    let graph = FakeGraph::new(&["alice.smith@contoso.com"]);
    let (mailboxes, server) = graph_on(&graph).await;
    // A photo that goes with the message, a video that goes through an upload session.
    let files = vec![
        file("p.jpg", 9_000, 1),
        file("visit.mp4", 3 * 1024 * 1024, 2),
    ];
    let (key, time, message) = mms(&files);
    let delivery = to_alice(&key, time, &message);
    graph.refuse_chunks.store(1, Ordering::SeqCst);
    graph.refuse_removals.store(1, Ordering::SeqCst);
    assert!(mailboxes.append(&delivery).await.is_err());
    let (left, drafts) = everything(&graph);
    assert_eq!((left.len(), drafts), (1, 0), "the partial message stays");
    assert_eq!(left[0].attachments.len(), 1, "short of the video");

    assert!(
        !mailboxes.contains(&delivery).await.unwrap(),
        "a partial message is not the copy"
    );
    assert!(
        everything(&graph).0.is_empty(),
        "removed as the copy was looked for"
    );
    mailboxes.append(&delivery).await.unwrap();
    landed_once(&graph, key.as_str(), &files, "whole");
    assert!(
        mailboxes.contains(&delivery).await.unwrap(),
        "found once whole"
    );
    assert_eq!(everything(&graph).0.len(), 1, "the whole message stays");
    server.abort();
}

/// An upload chunk Graph answers without keeping (it still expects the bytes the chunk
/// carried) fails the copy rather than leaving the file short: the first chunk of a file, or
/// its last. Taken again, the message is whole, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_chunk_graph_did_not_keep_fails_the_copy() {
    use std::sync::atomic::Ordering;
    // 5 MiB: two chunks, of 3,276,800 bytes and the rest.
    let files = vec![file("visit.mp4", 5 * 1024 * 1024, 3)];
    for (lost, case) in [(1, "the first chunk lost"), (2, "the last chunk lost")] {
        let graph = FakeGraph::new(&["alice.smith@contoso.com"]);
        let (mailboxes, server) = graph_on(&graph).await;
        let (key, time, message) = mms(&files);
        let delivery = to_alice(&key, time, &message);
        graph.lose_chunk.store(lost, Ordering::SeqCst);
        let failed = mailboxes.append(&delivery).await;
        assert!(
            matches!(&failed, Err(MailboxError::Unavailable(e)) if e.contains("still expects")),
            "{case}: {failed:?}"
        );
        assert!(!mailboxes.contains(&delivery).await.unwrap(), "{case}");
        mailboxes.append(&delivery).await.unwrap();
        landed_once(&graph, key.as_str(), &files, case);
        server.abort();
    }
}

/// The answer to the request that gives a whole message its item key, spoiled: the import
/// fails as unknown and removes the message, so the copy's next attempt imports it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoiled_answer_to_the_item_key_fails_the_copy() {
    let files = vec![file("visit.mp4", 3 * 1024 * 1024, 4)];
    for spoiled in [Spoiled::Html, Spoiled::Empty, Spoiled::Cut] {
        let graph = FakeGraph::new(&["alice.smith@contoso.com"]);
        let (mailboxes, server) = graph_on(&graph).await;
        let (key, time, message) = mms(&files);
        let delivery = to_alice(&key, time, &message);
        graph.spoil.lock().unwrap().push((Route::ItemKey, spoiled));
        let failed = mailboxes.append(&delivery).await;
        assert!(
            matches!(failed, Err(MailboxError::Unavailable(_))),
            "{spoiled:?}: {failed:?}"
        );
        assert!(
            graph.spoil.lock().unwrap().is_empty(),
            "{spoiled:?}: spoiled"
        );
        assert!(!mailboxes.contains(&delivery).await.unwrap(), "{spoiled:?}");
        mailboxes.append(&delivery).await.unwrap();
        landed_once(&graph, key.as_str(), &files, &format!("{spoiled:?}"));
        server.abort();
    }
}

/// A message made while its answer came too late (the client's timeout) is not made a second
/// time: the request is not sent again blindly, the message is looked for by its key and
/// found, and the copy is imported once, in the same attempt. Whether its files went with it
/// or after it. A draft whose answer came too late is asked for again, and the first one
/// goes with the second: no draft is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_made_without_an_answer_is_found_not_made_twice() {
    use std::sync::atomic::Ordering;
    for (files, stalled) in [
        (vec![file("p.jpg", 9_000, 1)], "message"),
        (vec![file("visit.mp4", 3 * 1024 * 1024, 2)], "message"),
        (vec![file("p.jpg", 9_000, 3)], "draft"),
    ] {
        let (graph, mailboxes, server) = alice_answering_within_a_second().await;
        let (key, time, message) = mms(&files);
        let switch = match stalled {
            "draft" => &graph.stall_drafts,
            _ => &graph.stall_messages,
        };
        switch.store(1, Ordering::SeqCst);
        mailboxes
            .append(&to_alice(&key, time, &message))
            .await
            .unwrap();
        assert_eq!(switch.load(Ordering::SeqCst), 0, "{stalled} stalled");
        let case = format!("{stalled}, {}", files[0].0);
        landed_once(&graph, key.as_str(), &files, &case);
        server.abort();
    }
}

/// A file posted to a message after it (one that did not fit the message's request) whose
/// answer was lost is never on the message twice: answered too late (kept), it is found on
/// the message and not posted again; lost by a gateway (not kept), it is posted once more.
/// Lost twice, the copy fails and its message is removed, and the next attempt lands it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_posted_without_an_answer_is_on_its_message_once() {
    use std::sync::atomic::Ordering;
    let files: Vec<File> = (0..4)
        .map(|i| file(&format!("g{i}.pdf"), 1_800_000, i))
        .collect();
    for (what, stalled, dropped) in [
        ("answered past the timeout", 1, 0),
        ("lost by a gateway", 0, 1),
        ("lost twice", 0, 2),
    ] {
        let (graph, mailboxes, server) = alice_answering_within_a_second().await;
        let (key, time, message) = mms(&files);
        graph.stall_files.store(stalled, Ordering::SeqCst);
        graph.drop_files.store(dropped, Ordering::SeqCst);
        let delivery = to_alice(&key, time, &message);
        let first = mailboxes.append(&delivery).await;
        assert_eq!(
            graph.stall_files.load(Ordering::SeqCst) + graph.drop_files.load(Ordering::SeqCst),
            0,
            "{what}: the switches were used"
        );
        if dropped == 2 {
            assert!(
                matches!(&first, Err(MailboxError::Unavailable(e)) if e.contains("looked for")),
                "{what}: {first:?}"
            );
            let (messages, drafts) = everything(&graph);
            assert_eq!((messages.len(), drafts), (0, 0), "{what}: nothing left");
            mailboxes.append(&delivery).await.unwrap();
        } else {
            first.unwrap();
        }
        landed_once(&graph, key.as_str(), &files, what);
        server.abort();
    }
}
