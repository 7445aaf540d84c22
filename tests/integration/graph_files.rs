//! Graph and a message's files: taken out of the MIME and posted, sent through upload
//! sessions, or copied from the draft, each one byte for byte, and no draft left behind.

use crate::graph_fake::FakeGraph;
use chrono::{DateTime, TimeZone, Utc};
use comms_archiver::mailbox::GraphMailboxes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Graph mailboxes on the fake, for one mailbox.
pub(crate) async fn graph_on(
    graph: &Arc<FakeGraph>,
) -> (GraphMailboxes, tokio::task::JoinHandle<()>) {
    graph_paced(graph, comms_archiver::mailbox::graph::DEFAULT_UPLOADS).await
}

/// [`graph_on`], pacing what is uploaded to a mailbox under `uploads`.
async fn graph_paced(
    graph: &Arc<FakeGraph>,
    uploads: comms_archiver::mailbox::graph::Limit,
) -> (GraphMailboxes, tokio::task::JoinHandle<()>) {
    graph_built(graph, uploads, std::time::Duration::from_secs(30)).await
}

/// [`graph_paced`], each request given up after `timeout`.
pub(crate) async fn graph_built(
    graph: &Arc<FakeGraph>,
    uploads: comms_archiver::mailbox::graph::Limit,
    timeout: std::time::Duration,
) -> (GraphMailboxes, tokio::task::JoinHandle<()>) {
    comms_archiver::install_crypto_provider();
    let (port, server) = graph.start().await;
    let tokens = comms_archiver::mailbox::token::TokenSource::new(
        format!("http://127.0.0.1:{port}/token").parse().unwrap(),
        "app",
        comms_archiver::secret::Secret::from_value("graph-secret"),
        "https://graph.microsoft.com/.default",
    )
    .unwrap();
    let mailboxes = GraphMailboxes::new(comms_archiver::mailbox::graph::GraphSettings {
        tenant: "contoso".into(),
        base: format!("http://127.0.0.1:{port}/v1.0").parse().unwrap(),
        tokens: Arc::new(tokens),
        max_retries: 4,
        timeout,
        uploads,
    })
    .unwrap();
    (mailboxes, server)
}

/// An MMS for alice with `files` (text/plain those named .txt, whatever their bytes, and
/// those that are ASCII text), rendered: its item key, time and message.
pub(crate) fn mms(files: &[File]) -> (comms_archiver::item::ItemKey, DateTime<Utc>, bytes::Bytes) {
    mms_as("MMS-MIX", files)
}

/// [`mms`] with the partner's id `id`.
fn mms_as(
    id: &str,
    files: &[File],
) -> (comms_archiver::item::ItemKey, DateTime<Utc>, bytes::Bytes) {
    use comms_archiver::item::{Attachment, Content, Direction, Item, ItemKey, Participant, Role};
    let item = Item {
        partner_id: id.into(),
        time: Utc.with_ymd_and_hms(2026, 11, 20, 9, 0, 0).unwrap(),
        direction: Direction::Inbound,
        conversation: None,
        participants: vec![
            Participant {
                role: Some(Role::From),
                phone: Some("+447700900555".into()),
                ..Default::default()
            },
            Participant {
                role: Some(Role::To),
                email: Some("alice.smith@contoso.com".into()),
                ..Default::default()
            },
        ],
        content: Content::Mms {
            text: Some("site visit".into()),
            media: files
                .iter()
                .map(|(name, data)| Attachment {
                    name: name.clone(),
                    content_type: match name.ends_with(".txt")
                        || data
                            .iter()
                            .all(|b| b.is_ascii_graphic() || b" \r\n".contains(b))
                    {
                        true => "text/plain",
                        false => "application/octet-stream",
                    }
                    .into(),
                    data: data.clone(),
                })
                .collect(),
        },
    };
    let key = ItemKey::new("o2", id);
    let ctx = comms_archiver::render::RenderContext {
        connector: "o2",
        partner: "telemessage-o2",
        invalid_domain: "telemessage.invalid",
    };
    let message = comms_archiver::render::render(
        &item,
        &key,
        &ctx,
        &[None, Some("alice.smith@contoso.com".into())],
    )
    .unwrap();
    assert!(message.len() <= 10 * 1024 * 1024, "under max_item_bytes");
    (key, item.time, bytes::Bytes::from(message))
}

/// A copy for alice's O2 folder.
pub(crate) fn to_alice<'a>(
    key: &'a comms_archiver::item::ItemKey,
    time: DateTime<Utc>,
    message: &'a bytes::Bytes,
) -> comms_archiver::mailbox::Delivery<'a> {
    comms_archiver::mailbox::Delivery {
        mailbox: "alice.smith@contoso.com",
        folder: "O2 SMS and Voice Network Archiver",
        key,
        time,
        message,
    }
}

/// Imports an MMS with these files through Graph and checks the received message holds
/// every one of them, byte for byte; returns how many went through upload sessions.
async fn import_mms(graph: &Arc<FakeGraph>, files: Vec<File>) -> usize {
    use comms_archiver::mailbox::Mailbox;
    let (mailboxes, server) = graph_on(graph).await;
    let (key, time, message) = mms(&files);
    let delivery = to_alice(&key, time, &message);
    let uploads = graph.uploads_done.load(Ordering::SeqCst);
    mailboxes.append(&delivery).await.unwrap();
    assert!(
        mailboxes.contains(&delivery).await.unwrap(),
        "found by its item key"
    );
    let stored: Vec<_> = graph
        .messages()
        .into_iter()
        .filter(|m| m.properties.values().any(|v| v == key.as_str()))
        .collect();
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].is_draft);
    let mut got = stored[0].attachments.clone();
    let mut want = files;
    got.sort();
    want.sort();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!(g == w, "attachment {} differs", w.0);
    }
    server.abort();
    graph.uploads_done.load(Ordering::SeqCst) - uploads
}

/// A file's name and bytes.
pub(crate) type File = (String, Vec<u8>);

pub(crate) fn file(name: &str, bytes: usize, seed: usize) -> File {
    let data = (0..bytes)
        .map(|i| ((i * 7 + seed * 13) % 251) as u8)
        .collect();
    (name.to_string(), data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_attachment_goes_through_an_upload_session() {
    let graph = FakeGraph::new(&["alice.smith@contoso.com"]);
    let uploads = import_mms(&graph, vec![file("visit.mp4", 4 * 1024 * 1024, 1)]).await;
    assert_eq!(uploads, 1);
    assert_eq!(graph.messages().len(), 1, "the draft is gone");
}

/// A message Graph refuses to make leaves no draft behind, whether its files were taken
/// out of the MIME (the draft removed while the message is made) or are copied from the
/// draft (removed after): the copy fails, and the mailbox holds nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_refused_leaves_no_draft() {
    use comms_archiver::mailbox::Mailbox;
    let notes = ("notes.txt".to_string(), b"call notes\r\n".repeat(100));
    for files in [vec![], vec![notes], vec![file("a.jpg", 9_000, 4)]] {
        let graph = FakeGraph::new(&["alice.smith@contoso.com"]);
        // Requests answered after a while, as Graph's are: a draft removed while its
        // attachments are still to be read would be gone by then.
        graph.latency_ms.store(20, Ordering::SeqCst);
        let (mailboxes, server) = graph_on(&graph).await;
        let (key, time, message) = mms(&files);
        let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
        let delivery = to_alice(&key, time, &message);
        graph.refuse_messages.store(1, Ordering::SeqCst);
        let refused = mailboxes.append(&delivery).await;
        assert!(refused.is_err(), "{names:?}: refused, so not imported");
        assert!(
            graph.messages().is_empty(),
            "{names:?}: nothing left behind"
        );
        // Taken again, it goes in once.
        mailboxes.append(&delivery).await.unwrap();
        let stored = graph.messages();
        assert_eq!(stored.len(), 1, "{names:?}");
        assert!(!stored[0].is_draft);
        assert_eq!(stored[0].attachments.len(), files.len());
        server.abort();
    }
}

/// A message's files go in the request that makes it while they fit one request, the rest
/// one by one after it: a copy is its folder (looked up, then made), its draft, the files
/// Graph parsed into the draft (when there are), the message and the draft's removal, one
/// request for each file that did not fit, and then one that gives the message its item key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_go_with_the_message_while_they_fit_one_request() {
    use comms_archiver::mailbox::Mailbox;
    let notes = ("notes.txt".to_string(), b"call notes\r\n".repeat(100));
    let photos: Vec<File> = (0..3)
        .map(|i| file(&format!("p{i}.jpg"), 9_000, i))
        .collect();
    let large: Vec<File> = (0..4)
        .map(|i| file(&format!("g{i}.pdf"), 1_800_000, i))
        .collect();
    let cases: Vec<(&str, Vec<File>, usize)> = vec![
        ("no file", vec![], 5),
        ("three photos", photos.clone(), 5),
        ("a text file Graph parses", vec![notes.clone()], 6),
        (
            "a text file and three photos",
            [photos, vec![notes]].concat(),
            6,
        ),
        ("four 1.8 MB files, one per request", large, 9),
    ];
    for (what, files, requests) in cases {
        let graph = FakeGraph::new(&["alice.smith@contoso.com"]);
        let (mailboxes, server) = graph_on(&graph).await;
        let (key, time, message) = mms(&files);
        mailboxes
            .append(&to_alice(&key, time, &message))
            .await
            .unwrap();
        let stored = graph.messages();
        assert_eq!(stored.len(), 1, "{what}: the draft is gone");
        let (mut got, mut want) = (stored[0].attachments.clone(), files.clone());
        got.sort();
        want.sort();
        assert!(got == want, "{what}: every file, byte for byte");
        let served = graph.served()["alice.smith@contoso.com"];
        assert_eq!(served, requests, "{what}: requests");
        server.abort();
    }
}

/// A copy's draft is made while its folder is looked up, not after: the fake answers a
/// folder lookup only once a draft was made in the mailbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_draft_is_made_while_the_folder_is_looked_up() {
    append_while_lookups_wait(|graph| &graph.lookups_wait_for_a_draft).await;
}

/// A copy's draft goes once its files are read, while its folder is still looked up: the
/// fake answers a folder lookup only once a draft of the mailbox was removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_draft_goes_while_the_folder_is_looked_up() {
    append_while_lookups_wait(|graph| &graph.lookups_wait_for_a_removed_draft).await;
}

/// Appends for Alice an MMS with a photo (sent with the message) and a text file (read back
/// from the draft) while `switch` holds the fake's folder lookups; it arrives whole.
async fn append_while_lookups_wait(switch: impl Fn(&FakeGraph) -> &AtomicBool) {
    use comms_archiver::mailbox::Mailbox;
    let graph = FakeGraph::new(&["alice.smith@contoso.com"]);
    switch(&graph).store(true, Ordering::SeqCst);
    let (mailboxes, server) = graph_on(&graph).await;
    let files = vec![file("a.jpg", 9_000, 1), file("notes.txt", 5_000, 2)];
    let (key, time, message) = mms(&files);
    mailboxes
        .append(&to_alice(&key, time, &message))
        .await
        .unwrap();
    let stored = graph.messages();
    assert_eq!(stored.len(), 1, "the draft is gone, the message made");
    let (mut got, mut want) = (stored[0].attachments.clone(), files);
    got.sort();
    want.sort();
    assert!(
        !stored[0].is_draft && got == want,
        "every file, byte for byte"
    );
    assert_eq!(
        graph.served()["alice.smith@contoso.com"],
        6,
        "folder looked up and made; draft made, its files read, deleted; message made"
    );
    server.abort();
}

/// Every copy under max_item_bytes imports, whatever its mix of files: each request is
/// sized as sent (base64 of a MIME that holds base64), not by each file alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mix_of_attachments_under_the_limit_imports() {
    let mib = 1024 * 1024;
    let mixes: Vec<(&str, Vec<File>)> = vec![
        ("one 2.0 MB photo", vec![file("a.jpg", 2_000_000, 1)]),
        ("one 2.5 MB photo", vec![file("a.jpg", 2_500_000, 2)]),
        (
            "one file just under 3 MB",
            vec![file("a.pdf", 3 * mib - 1, 3)],
        ),
        ("one file of exactly 2 MiB", vec![file("a.bin", 2 * mib, 4)]),
        (
            "one file a byte under 2 MiB",
            vec![file("a.bin", 2 * mib - 1, 5)],
        ),
        (
            "three 1 MB files",
            (0..3)
                .map(|i| file(&format!("f{i}.pdf"), 1_000_000, i))
                .collect(),
        ),
        (
            "four 1.8 MB files",
            (0..4)
                .map(|i| file(&format!("g{i}.pdf"), 1_800_000, i))
                .collect(),
        ),
        (
            "sixty small files",
            (0..60)
                .map(|i| file(&format!("s{i}.png"), 100_000, i))
                .collect(),
        ),
        (
            "large and small together",
            vec![
                file("v.mp4", 5 * mib, 1),
                file("p.jpg", 1_500_000, 2),
                file("q.jpg", 600_000, 3),
                file("r.txt", 2_000, 4),
            ],
        ),
    ];
    for (what, files) in mixes {
        let graph = FakeGraph::new(&["alice.smith@contoso.com"]);
        let uploads = import_mms(&graph, files.clone()).await;
        let large = files.iter().filter(|(_, d)| d.len() >= 2 * mib).count();
        assert_eq!(
            uploads, large,
            "{what}: upload sessions for the files of 2 MiB or more"
        );
    }
}

/// A partner's text file arrives as the partner sent it, whatever its bytes: one in a
/// charset that is not UTF-8, one with bytes no charset reads, bare line breaks and NULs,
/// one of plain ASCII lines ending in LF,
/// small (it stays in the MIME the draft is made from) and large (taken out of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_file_arrives_byte_for_byte() {
    let latin1 = (
        "notes.txt".to_string(),
        b"caf\xe9 cr\xe8me\nna\xefve\r\n\x00end".to_vec(),
    );
    let mib = 1024 * 1024;
    for files in [
        vec![latin1.clone()],
        vec![(
            "unix.txt".to_string(),
            b"line one\nline two\n\nend\n".to_vec(),
        )],
        vec![file("small.txt", 5_000, 1)],
        vec![file("large.txt", 2 * mib + 10, 2)],
        vec![
            latin1,
            file("a.jpg", 9_000, 3),
            file("large.txt", 3 * mib, 4),
        ],
    ] {
        let graph = FakeGraph::new(&["alice.smith@contoso.com"]);
        import_mms(&graph, files).await;
    }
}

/// Upload chunks are paced and retried like every request: 503 and 429 with Retry-After on
/// the chunks do not fail the copy, and a chunk sent again is not stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_upload_chunks_are_retried() {
    let graph = FakeGraph::new(&["alice.smith@contoso.com"]);
    graph.throttle_uploads.store(3, Ordering::SeqCst);
    let uploads = import_mms(&graph, vec![file("visit.mp4", 7 * 1024 * 1024, 9)]).await;
    assert_eq!(uploads, 1);
    assert_eq!(
        graph.throttle_uploads.load(Ordering::SeqCst),
        0,
        "every refusal was met"
    );
}

/// What is uploaded to a mailbox stays under the configured limit in every window: a
/// mailbox sent twelve photo MMS, four at once, 24 MB in all, against a Graph that refuses more
/// than 8 MB per second, gets every photo and is never refused. Also when each copy first
/// waits for upload room kept for it (as delivery asks, before it takes room in the budget),
/// its requests drawing on it, and some copies let their room go unused (as one found in
/// the mailbox already does): room let go is free again, never lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_to_a_mailbox_are_paced_under_its_limit() {
    for kept in [false, true] {
        let paced = tokio::time::timeout(std::time::Duration::from_secs(120), paced_photos(kept));
        assert!(paced.await.is_ok(), "room kept {kept}: stuck");
    }
}

async fn paced_photos(kept: bool) {
    use comms_archiver::mailbox::graph::Limit;
    use comms_archiver::mailbox::{Mailbox, Paced};
    use futures::StreamExt;
    let graph = FakeGraph::new(&["alice.smith@contoso.com"]);
    let window = std::time::Duration::from_secs(1);
    graph.uploads.set(8_000_000, window);
    let limit = Limit {
        most: 8_000_000,
        window,
    };
    let (mailboxes, server) = graph_paced(&graph, limit).await;
    let items: Vec<_> = (0..12)
        .map(|i| {
            let photo = file(&format!("site-{i}.jpg"), 1_500_000, i);
            let (key, time, message) = mms_as(&format!("MMS-{i}"), std::slice::from_ref(&photo));
            (key, time, message, photo)
        })
        .collect();
    let mailboxes = &mailboxes;
    let results: Vec<_> = futures::stream::iter(&items)
        .map(|(key, time, message, _)| async move {
            let delivery = to_alice(key, *time, message);
            if !kept {
                return mailboxes.append(&delivery).await;
            }
            let bytes = message.len() as u64;
            let unused = mailboxes.pace(delivery.mailbox, bytes).await;
            drop(unused);
            let room: Paced = mailboxes.pace(delivery.mailbox, bytes).await;
            room.within(mailboxes.append(&delivery)).await
        })
        .buffer_unordered(4)
        .collect()
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        graph.uploads.refused.load(Ordering::SeqCst),
        0,
        "room kept {kept}: never over the limit"
    );
    let most = graph.uploads.most_in_a_window.load(Ordering::SeqCst);
    assert!(
        most > 4_000_000,
        "the limit was neared: {most} bytes in a window"
    );
    let stored = graph.messages();
    assert_eq!(stored.len(), items.len());
    for (key, _, _, photo) in &items {
        let message = stored
            .iter()
            .find(|m| m.properties.values().any(|v| v == key.as_str()))
            .expect("imported");
        assert!(
            message.attachments == vec![photo.clone()],
            "{key}: the photo"
        );
    }
    server.abort();
}

/// A draft's files listed in pages (Graph names each next page) all go with the message:
/// five text files that stay in the MIME, listed two at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_s_files_listed_in_pages_all_go_with_the_message() {
    let graph = FakeGraph::new(&["alice.smith@contoso.com"]);
    graph.attachment_page.store(2, Ordering::SeqCst);
    let notes: Vec<File> = (0..5)
        .map(|i| {
            (
                format!("notes-{i}.txt"),
                format!("note {i}\r\n").repeat(50).into_bytes(),
            )
        })
        .collect();
    import_mms(&graph, notes).await;
    assert_eq!(graph.messages().len(), 1, "the draft is gone");
}
