//! The SMTP session against clients that misbehave, over an in-memory connection, keeping
//! into a local stage.

use super::session::Session;
use super::*;
use crate::sources::eml::EmlFlavor;
use crate::stage::{LocalStage, Stage};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const MESSAGE: &str = "From: \"447700900101\" <alice.smith@contoso.com>\r\n\
To: \"447700900555\" <447700900555@sms.telemessage.example>\r\n\
Date: Fri, 20 Nov 2026 08:00:00 +0000\r\n\
Message-ID: <TM-1@telemessage.example>\r\n\
Subject: SMS message\r\n\
X-TELEMESSAGE-ArchiveMessageID: TM-1\r\n\
X-TELEMESSAGE-ArchiveInitiator: 447700900101\r\n\
\r\n\
Good morning.\r\n";

struct Trial {
    _dir: tempfile::TempDir,
    stage: Arc<dyn Stage>,
    intake: Arc<Intake>,
    stop: tokio::sync::watch::Sender<bool>,
}

fn settings() -> Settings {
    Settings {
        hostname: "intake.test".into(),
        max_message_bytes: 64 * 1024,
        require_tls: false,
        tls: None,
        auth: None,
        idle: Duration::from_secs(30),
        networks: vec![],
        max_connections: 10,
        client_certificates: false,
        max_buffered_bytes: 1 << 20,
    }
}

fn trial_with(settings: Settings, stage: Option<Arc<dyn Stage>>) -> Trial {
    let dir = tempfile::tempdir().unwrap();
    let stage = stage.unwrap_or_else(|| Arc::new(LocalStage::new(dir.path())));
    let route = Route {
        recipient: "o2-archive@archive.test".into(),
        connector: "o2".into(),
        format: EmlFormat {
            flavor: EmlFlavor::TeleMessage,
            region: phonenumber::country::Id::GB,
        },
    };
    let intake = Arc::new(Intake::new(
        settings,
        vec![route],
        Keeper::new(stage.clone(), 7),
    ));
    let (stop, _) = tokio::sync::watch::channel(false);
    Trial {
        _dir: dir,
        stage,
        intake,
        stop,
    }
}

fn trial() -> Trial {
    trial_with(settings(), None)
}

/// A client on the other end of an in-memory connection.
struct Client {
    io: DuplexStream,
    seen: Vec<u8>,
}

impl Client {
    fn connect(trial: &Trial) -> (Client, tokio::task::JoinHandle<()>) {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let session = Session::new(
            trial.intake.clone(),
            Box::new(theirs),
            trial.stop.subscribe(),
        );
        let task = tokio::spawn(async move {
            let _ = session.run().await;
        });
        (
            Client {
                io: ours,
                seen: Vec::new(),
            },
            task,
        )
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    /// The next complete reply (all its lines), or what was left when the server closed.
    async fn reply(&mut self) -> String {
        loop {
            if let Some(end) = final_line_end(&self.seen) {
                let reply: Vec<u8> = self.seen.drain(..end).collect();
                return String::from_utf8(reply).unwrap();
            }
            let mut buf = [0u8; 4096];
            let n = self.io.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return String::from_utf8(std::mem::take(&mut self.seen)).unwrap();
            }
            self.seen.extend_from_slice(&buf[..n]);
        }
    }

    async fn says(&mut self, bytes: &[u8]) -> String {
        self.send(bytes).await;
        self.reply().await
    }
}

/// Where the first final reply line ("250 ...", not "250-...") ends.
fn final_line_end(seen: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(at) = seen[start..].iter().position(|&b| b == b'\n') {
        let line = &seen[start..start + at + 1];
        if line.len() >= 4 && line[3] == b' ' {
            return Some(start + at + 1);
        }
        start += at + 1;
    }
    None
}

async fn open_transaction(client: &mut Client) {
    assert!(client.reply().await.starts_with("220 intake.test ESMTP"));
    let ehlo = client.says(b"EHLO sender.test\r\n").await;
    assert!(
        ehlo.contains("250-SIZE 65536") && ehlo.contains("PIPELINING"),
        "{ehlo}"
    );
    assert!(
        !ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert!(client
        .says(b"MAIL FROM:<archive@telemessage.example>\r\n")
        .await
        .starts_with("250"));
    assert!(client
        .says(b"RCPT TO:<O2-Archive@Archive.Test>\r\n")
        .await
        .starts_with("250"));
    assert!(client.says(b"DATA\r\n").await.starts_with("354"));
}

async fn kept(stage: &dyn Stage) -> (Vec<String>, usize) {
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let intake = store::read_day(stage, "o2", day).await.unwrap();
    (intake.kept, intake.recorded.len())
}

fn data(message: &str) -> Vec<u8> {
    let mut out = message.replace("\r\n.", "\r\n..").into_bytes();
    out.extend_from_slice(b".\r\n");
    out
}

#[tokio::test]
async fn a_message_is_kept_once_however_often_it_is_sent() {
    let trial = trial();
    for round in 0..2 {
        let (mut client, _) = Client::connect(&trial);
        open_transaction(&mut client).await;
        let answer = client.says(&data(MESSAGE)).await;
        match round {
            0 => assert_eq!(answer, "250 2.0.0 Ok: kept\r\n"),
            _ => assert!(answer.contains("kept before"), "{answer}"),
        }
        assert_eq!(client.says(b"QUIT\r\n").await, "221 2.0.0 Bye\r\n");
    }
    let (kept_keys, recorded) = kept(trial.stage.as_ref()).await;
    assert_eq!((kept_keys.len(), recorded), (1, 1));
    let key = &kept_keys[0];
    let stored = trial
        .stage
        .get(&store::message_key(
            "o2",
            chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap(),
            key,
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, MESSAGE.as_bytes(), "kept exactly as sent");
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order_and_dots_are_unstuffed() {
    let trial = trial();
    let (mut client, _) = Client::connect(&trial);
    assert!(client.reply().await.starts_with("220"));
    let body = MESSAGE.replace("Good morning.", ".leading dot\r\n..two dots");
    let mut pipelined = b"EHLO sender.test\r\nMAIL FROM:<a@telemessage.example> SIZE=900\r\nRCPT TO:<nobody@archive.test>\r\nRCPT TO:<o2-archive@archive.test>\r\nDATA\r\n".to_vec();
    client.send(&pipelined).await;
    assert!(client.reply().await.contains("250 ENHANCEDSTATUSCODES"));
    assert!(client.reply().await.starts_with("250 2.1.0"));
    assert!(client.reply().await.starts_with("550 5.1.1"));
    assert!(client.reply().await.starts_with("250 2.1.5"));
    assert!(client.reply().await.starts_with("354"));
    pipelined = data(&body);
    assert_eq!(client.says(&pipelined).await, "250 2.0.0 Ok: kept\r\n");
    let (keys, _) = kept(trial.stage.as_ref()).await;
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let stored = trial
        .stage
        .get(&store::message_key("o2", day, &keys[0]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, body.as_bytes());
}

#[tokio::test]
async fn what_cannot_be_archived_is_refused_with_the_reason_and_nothing_is_kept() {
    let trial = trial();
    let (mut client, _) = Client::connect(&trial);
    open_transaction(&mut client).await;
    let orphan = MESSAGE.replace("X-TELEMESSAGE-ArchiveInitiator: 447700900101\r\n", "");
    let answer = client.says(&data(&orphan)).await;
    assert!(
        answer.starts_with("550 5.6.0") && answer.contains("ArchiveInitiator"),
        "{answer}"
    );
    // NUL octets.
    assert!(client
        .says(b"MAIL FROM:<a@b.example>\r\n")
        .await
        .starts_with("250"));
    assert!(client
        .says(b"RCPT TO:<o2-archive@archive.test>\r\n")
        .await
        .starts_with("250"));
    assert!(client.says(b"DATA\r\n").await.starts_with("354"));
    let answer = client
        .says(&data(&MESSAGE.replace("morning", "mor\0ning")))
        .await;
    assert!(
        answer.starts_with("550 5.6.0") && answer.contains("NUL"),
        "{answer}"
    );
    // Too large, declared and not.
    let answer = client.says(b"MAIL FROM:<a@b.example> SIZE=70000\r\n").await;
    assert!(answer.starts_with("552 5.3.4"), "{answer}");
    assert!(client
        .says(b"MAIL FROM:<a@b.example>\r\n")
        .await
        .starts_with("250"));
    assert!(client
        .says(b"RCPT TO:<o2-archive@archive.test>\r\n")
        .await
        .starts_with("250"));
    assert!(client.says(b"DATA\r\n").await.starts_with("354"));
    let huge = MESSAGE.replace("Good morning.", &"x".repeat(70_000));
    let answer = client.says(&data(&huge)).await;
    assert!(answer.starts_with("552 5.3.4"), "{answer}");
    // The session is still in step: a good message goes through.
    assert!(client
        .says(b"MAIL FROM:<a@b.example>\r\n")
        .await
        .starts_with("250"));
    assert!(client
        .says(b"RCPT TO:<o2-archive@archive.test>\r\n")
        .await
        .starts_with("250"));
    assert!(client.says(b"DATA\r\n").await.starts_with("354"));
    assert_eq!(client.says(&data(MESSAGE)).await, "250 2.0.0 Ok: kept\r\n");
    assert_eq!(kept(trial.stage.as_ref()).await.0.len(), 1);
}

#[tokio::test]
async fn long_lines_are_refused_as_commands_and_kept_whole_in_a_message() {
    let trial = trial();
    let (mut client, _) = Client::connect(&trial);
    assert!(client.reply().await.starts_with("220"));
    let mut long = vec![b'N'; 10_000];
    long.extend_from_slice(b"\r\n");
    assert!(client
        .says(&long)
        .await
        .starts_with("500 5.5.2 line too long"));
    assert!(client
        .says(b"EHLO sender.test\r\n")
        .await
        .contains("250 ENHANCED"));
    assert!(client
        .says(b"MAIL FROM:<a@b.example>\r\n")
        .await
        .starts_with("250"));
    assert!(client
        .says(b"RCPT TO:<o2-archive@archive.test>\r\n")
        .await
        .starts_with("250"));
    assert!(client.says(b"DATA\r\n").await.starts_with("354"));
    let line = "y".repeat(10_000);
    let body = MESSAGE.replace("Good morning.", &line);
    assert_eq!(client.says(&data(&body)).await, "250 2.0.0 Ok: kept\r\n");
    let (keys, _) = kept(trial.stage.as_ref()).await;
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let stored = trial
        .stage
        .get(&store::message_key("o2", day, &keys[0]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, body.as_bytes());
}

#[tokio::test]
async fn a_bare_lf_in_a_message_closes_the_connection_keeping_nothing() {
    let trial = trial();
    let (mut client, session) = Client::connect(&trial);
    open_transaction(&mut client).await;
    let smuggled = MESSAGE.replace(
        "Good morning.\r\n",
        "Good morning.\n.\nMAIL FROM:<x@y.example>\r\n",
    );
    let answer = client.says(&data(&smuggled)).await;
    assert!(answer.starts_with("521 5.5.2 bare LF"), "{answer}");
    session.await.unwrap();
    assert_eq!(kept(trial.stage.as_ref()).await, (vec![], 0));
}

#[tokio::test]
async fn auth_needs_tls_first_and_mail_needs_auth() {
    let mut with_auth = settings();
    with_auth.auth = Some(Credentials::new(
        "telemessage".into(),
        crate::secret::Secret::from_value("s3cret"),
    ));
    let trial = trial_with(with_auth, None);
    let (mut client, _) = Client::connect(&trial);
    assert!(client.reply().await.starts_with("220"));
    let ehlo = client.says(b"EHLO sender.test\r\n").await;
    assert!(
        !ehlo.contains("AUTH"),
        "AUTH is offered only over TLS: {ehlo}"
    );
    let answer = client
        .says(b"AUTH PLAIN AHRlbGVtZXNzYWdlAHMzY3JldA==\r\n")
        .await;
    assert!(answer.starts_with("538 5.7.11"), "{answer}");
    let answer = client.says(b"MAIL FROM:<a@b.example>\r\n").await;
    assert!(
        answer.starts_with("530 5.7.0 authentication required"),
        "{answer}"
    );

    let mut tls_required = settings();
    tls_required.require_tls = true;
    let trial = trial_with(tls_required, None);
    let (mut client, _) = Client::connect(&trial);
    assert!(client.reply().await.starts_with("220"));
    client.says(b"EHLO sender.test\r\n").await;
    let answer = client.says(b"MAIL FROM:<a@b.example>\r\n").await;
    assert!(
        answer.starts_with("530 5.7.0 must issue a STARTTLS"),
        "{answer}"
    );
}

/// A stage whose disk is full: every write fails.
struct Full(LocalStage);

#[async_trait::async_trait]
impl Stage for Full {
    async fn put_new(
        &self,
        key: &str,
        _: &[u8],
    ) -> Result<crate::stage::Created, crate::stage::StageError> {
        Err(crate::stage::StageError {
            stage: "full".into(),
            operation: "create",
            key: key.into(),
            message: "No space left on device (os error 28)".into(),
        })
    }
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), crate::stage::StageError> {
        self.0.put(key, bytes).await
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, crate::stage::StageError> {
        self.0.get(key).await
    }
    async fn get_versioned(
        &self,
        key: &str,
    ) -> Result<Option<(Vec<u8>, crate::stage::Version)>, crate::stage::StageError> {
        self.0.get_versioned(key).await
    }
    async fn put_if(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<&crate::stage::Version>,
    ) -> Result<Option<crate::stage::Version>, crate::stage::StageError> {
        self.0.put_if(key, bytes, expected).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, crate::stage::StageError> {
        self.0.list(prefix).await
    }
    fn describe(&self) -> String {
        "full".into()
    }
}

#[tokio::test]
async fn a_message_that_cannot_be_kept_is_answered_451_so_the_sender_retries() {
    let dir = tempfile::tempdir().unwrap();
    let full: Arc<dyn Stage> = Arc::new(Full(LocalStage::new(dir.path())));
    let trial = trial_with(settings(), Some(full));
    let (mut client, _) = Client::connect(&trial);
    open_transaction(&mut client).await;
    let answer = client.says(&data(MESSAGE)).await;
    assert!(answer.starts_with("451 4.3.0"), "{answer}");
    assert!(
        !answer.contains("No space"),
        "the sender is not told our disk's state"
    );
    assert_eq!(kept(trial.stage.as_ref()).await, (vec![], 0));
}

#[tokio::test]
async fn a_stop_tells_a_sender_in_the_middle_of_data_421_and_keeps_nothing() {
    let trial = trial();
    let (mut client, session) = Client::connect(&trial);
    open_transaction(&mut client).await;
    client.send(&MESSAGE.as_bytes()[..100]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    trial.stop.send_replace(true);
    let answer = client.reply().await;
    assert!(answer.starts_with("421 4.3.2"), "{answer}");
    session.await.unwrap();
    assert_eq!(kept(trial.stage.as_ref()).await, (vec![], 0));
}

#[tokio::test]
async fn messages_held_in_memory_together_stay_within_the_budget() {
    let mut small = settings();
    small.max_buffered_bytes = 8 * 1024;
    let trial = trial_with(small, None);
    // One sender is in the middle of a 6 KB message, holding most of the budget.
    let (mut first, _) = Client::connect(&trial);
    open_transaction(&mut first).await;
    let big = MESSAGE.replace("Good morning.", &"x".repeat(6 * 1024));
    let bytes = data(&big);
    first.send(&bytes[..bytes.len() - 3]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A second sender's 4 KB message does not fit beside it: 451, read to its end.
    let (mut second, _) = Client::connect(&trial);
    open_transaction(&mut second).await;
    let other = MESSAGE
        .replace("TM-1", "TM-2")
        .replace("Good morning.", &"y".repeat(4 * 1024));
    let answer = second.says(&data(&other)).await;
    assert!(answer.starts_with("451 4.3.1"), "{answer}");
    // The first finishes; its share is given back, and the second sender's retry fits.
    assert_eq!(
        first.says(&bytes[bytes.len() - 3..]).await,
        "250 2.0.0 Ok: kept\r\n"
    );
    assert!(second
        .says(b"MAIL FROM:<a@b.example>\r\n")
        .await
        .starts_with("250"));
    assert!(second
        .says(b"RCPT TO:<o2-archive@archive.test>\r\n")
        .await
        .starts_with("250"));
    assert!(second.says(b"DATA\r\n").await.starts_with("354"));
    assert_eq!(second.says(&data(&other)).await, "250 2.0.0 Ok: kept\r\n");
    assert_eq!(
        trial
            .intake
            .buffered
            .load(std::sync::atomic::Ordering::Acquire),
        0
    );
}

/// A message for a day a run holds (collecting or delivering it, its read of the intake
/// perhaps done) is kept in that day and in the next open one too: a run that read the day
/// before the message came misses it there, and the next day's run takes it (the journal
/// imports it once). Without a run on the day, it is kept there alone.
#[tokio::test]
async fn a_message_for_a_day_a_run_holds_is_kept_in_the_next_open_day_too() {
    use crate::intake::store::{message_key, read_day, Keeper};
    let dir = tempfile::tempdir().unwrap();
    let stage: Arc<dyn Stage> = Arc::new(LocalStage::new(dir.path()));
    let keeper = Keeper::new(stage.clone(), 7);
    let day = chrono::Utc::now().date_naive() - chrono::Days::new(3);
    let next = day.succ_opt().unwrap();
    let time = day.and_hms_opt(8, 0, 0).unwrap().and_utc();
    let key = |id: &str| crate::item::ItemKey::new("o2", id).as_str().to_string();
    let kept_in = |day, id: &str| {
        let (stage, key) = (stage.clone(), key(id));
        async move {
            let kept = stage.get(&message_key("o2", day, &key)).await.unwrap();
            let recorded = read_day(&*stage, "o2", day).await.unwrap().recorded;
            assert_eq!(
                kept.is_some(),
                recorded.contains_key(&key),
                "kept is recorded"
            );
            kept.is_some()
        }
    };

    keeper.keep("o2", "one", time, b"first").await.unwrap();
    assert!(kept_in(day, "one").await);
    assert!(!kept_in(next, "one").await, "no run holds the day");

    let ledger = crate::ledger::Ledger::new(stage.clone());
    let lease = ledger
        .acquire_day("o2", day, &crate::ledger::owner_id())
        .await
        .unwrap()
        .expect("no one holds the day");
    keeper.keep("o2", "two", time, b"second").await.unwrap();
    assert!(kept_in(day, "two").await, "kept in its own day");
    assert!(kept_in(next, "two").await, "and in the next open day");

    ledger.release(lease).await.unwrap();
    keeper.keep("o2", "three", time, b"third").await.unwrap();
    assert!(kept_in(day, "three").await);
    assert!(!kept_in(next, "three").await, "the run is over");
}
