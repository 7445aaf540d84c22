//! A fake Microsoft Graph that enforces the documented behaviour the Graph mailbox must live
//! with: a message created from MIME is a draft (isDraft true); a request carries about
//! 4 MB; more than 4 concurrent requests to a mailbox get 429 with Retry-After; a duplicate
//! folder gets ErrorFolderExists; uploads over a set limit per mailbox get 429; messages are found by the named-property filter; large
//! attachments come through upload sessions; an unknown mailbox is ErrorInvalidUser. On
//! request it also misbehaves as a tenant or what stands before it may: answers spoiled after
//! the request took effect ([`spoil`]), listings in pages, requests refused, chunks lost.

use alarm::answer_at;
use base64::Engine;
use comms_archiver::http_server::{self, Request, Response};
use parse::{draft_from_mime, error, posted_file};
use serde_json::{json, Value};
pub use spoil::{Route, Spoiled};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const REQUEST_LIMIT: usize = 4 * 1024 * 1024;
const INLINE_LIMIT: usize = 3 * 1024 * 1024;
/// An upload session refuses a file smaller than this
/// (ErrorAttachmentSizeShouldNotBeLessThanMinimumSize).
const UPLOAD_MIN: usize = 2 * 1024 * 1024;

/// A message as the fake stores it.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub mailbox: String,
    pub folder: Option<String>,
    pub is_draft: bool,
    pub json: Value,
    pub properties: HashMap<String, String>,
    pub attachments: Vec<(String, Vec<u8>)>,
}

#[derive(Default)]
struct State {
    folders: HashMap<String, Vec<(String, String)>>,
    messages: HashMap<String, Message>,
    uploads: HashMap<String, (String, String, String, usize, Vec<u8>)>,
    in_flight: HashMap<String, usize>,
    max_in_flight: usize,
    /// Requests served (not refused for concurrency), by mailbox.
    served: HashMap<String, usize>,
    /// Time those requests spent counted against the mailbox's four, by mailbox.
    busy: HashMap<String, std::time::Duration>,
    /// When each mailbox's first served request came in and its last one was answered.
    spans: HashMap<String, (std::time::Instant, std::time::Instant)>,
    /// Folder lookups served, by mailbox.
    lookups: HashMap<String, usize>,
    /// The mailboxes a draft was made in (from MIME), and those a draft was removed from.
    drafted: HashSet<String>,
    undrafted: HashSet<String>,
    next: usize,
}

/// The fake and its switches.
pub struct FakeGraph {
    state: Mutex<State>,
    mailboxes: Mutex<HashSet<String>>,
    port: Mutex<u16>,
    /// The next N requests answer 429 (odd) or 503 (even) with Retry-After: 1.
    pub throttle: AtomicUsize,
    pub throttled: AtomicUsize,
    pub uploads_done: AtomicUsize,
    /// The next N upload chunks answer 503 (odd) or 429 (even) with Retry-After: 1.
    pub throttle_uploads: AtomicUsize,
    /// The next N messages made in a folder are refused (400 ErrorInvalidProperty).
    pub refuse_messages: AtomicUsize,
    /// The next N upload chunks are refused (400, not retried).
    pub refuse_chunks: AtomicUsize,
    /// The next N removals of a message that is not a draft are refused (400).
    pub refuse_removals: AtomicUsize,
    /// The next N messages made in a folder are answered 3 s late (made at once), past a
    /// client's timeout.
    pub stall_messages: AtomicUsize,
    /// The next N drafts made from MIME are answered 3 s late (made at once).
    pub stall_drafts: AtomicUsize,
    /// The next N files posted to a message are answered 3 s late (kept at once).
    pub stall_files: AtomicUsize,
    /// The next N files posted to a message are answered 504, as by a gateway, and not kept.
    pub drop_files: AtomicUsize,
    /// The Nth upload chunk from now is lost (none when 0): answered 200, naming the bytes
    /// still expected (from where the chunk began), and not kept.
    pub lose_chunk: AtomicUsize,
    /// Milliseconds from a request read to its answer (the fake's own work included).
    pub latency_ms: AtomicUsize,
    /// Folder lookups answer only once a draft was made in their mailbox (503 after 5 s).
    pub lookups_wait_for_a_draft: AtomicBool,
    /// Folder lookups answer only once a draft of their mailbox was removed (503 after 5 s).
    pub lookups_wait_for_a_removed_draft: AtomicBool,
    /// What may be uploaded to a mailbox in any window (no limit unless set).
    pub uploads: uploads::UploadLimit,
    /// Successful answers spoiled on their way back, each once: the request takes effect,
    /// then its answer is replaced, as by a gateway answering in Graph's place.
    pub spoil: Mutex<Vec<(Route, Spoiled)>>,
    /// A draft's attachments are listed in pages of this many, each naming the next (all
    /// at once when 0).
    pub attachment_page: AtomicUsize,
    /// A draft's attachments are listed as attached messages (itemAttachment, no bytes), as
    /// Graph lists a message/rfc822 part.
    pub items_in_drafts: AtomicBool,
}

/// The fake served on a runtime of its own ([`FakeGraph::start_apart`]).
pub struct ServedApart {
    runtime: Option<tokio::runtime::Runtime>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ServedApart {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl FakeGraph {
    pub fn new(mailboxes: &[&str]) -> Arc<FakeGraph> {
        Arc::new(FakeGraph {
            state: Mutex::new(State::default()),
            mailboxes: Mutex::new(mailboxes.iter().map(|m| m.to_string()).collect()),
            port: Mutex::new(0),
            throttle: AtomicUsize::new(0),
            throttled: AtomicUsize::new(0),
            uploads_done: AtomicUsize::new(0),
            throttle_uploads: AtomicUsize::new(0),
            refuse_messages: AtomicUsize::new(0),
            refuse_chunks: AtomicUsize::new(0),
            refuse_removals: AtomicUsize::new(0),
            lose_chunk: AtomicUsize::new(0),
            stall_messages: AtomicUsize::new(0),
            stall_drafts: AtomicUsize::new(0),
            stall_files: AtomicUsize::new(0),
            drop_files: AtomicUsize::new(0),
            latency_ms: AtomicUsize::new(0),
            lookups_wait_for_a_draft: AtomicBool::new(false),
            lookups_wait_for_a_removed_draft: AtomicBool::new(false),
            uploads: Default::default(),
            spoil: Mutex::new(Vec::new()),
            attachment_page: AtomicUsize::new(0),
            items_in_drafts: AtomicBool::new(false),
        })
    }

    /// Creates a mailbox in the tenant, as an admin would.
    pub fn create_mailbox(&self, address: &str) {
        self.mailboxes.lock().unwrap().insert(address.to_string());
    }

    /// Serves on a free loopback port; returns it.
    pub async fn start(self: &Arc<Self>) -> (u16, tokio::task::JoinHandle<()>) {
        let listener = http_server::bind("127.0.0.1:0".parse().unwrap(), "fake Graph")
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        *self.port.lock().unwrap() = port;
        let fake = self.clone();
        let handler = move |request: Request| {
            let fake = fake.clone();
            async move { fake.handle(request).await }
        };
        (
            port,
            tokio::spawn(http_server::serve(listener, Arc::new(handler))),
        )
    }

    /// [`Self::start`] on a runtime of its own, on threads of its own, as a remote service
    /// would be: its answers are not queued behind the daemon's tasks, nor the daemon's work
    /// behind its. Served until the returned handle is dropped.
    pub async fn start_apart(self: &Arc<Self>, threads: usize) -> (u16, ServedApart) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("fake-graph")
            .enable_all()
            .build()
            .unwrap();
        let (started, port) = tokio::sync::oneshot::channel();
        let fake = self.clone();
        let task = runtime.spawn(async move {
            let (port, served) = fake.start().await;
            let _ = started.send(port);
            let _ = served.await;
        });
        let port = port.await.unwrap();
        (
            port,
            ServedApart {
                runtime: Some(runtime),
                task,
            },
        )
    }

    pub fn messages(&self) -> Vec<Message> {
        self.state
            .lock()
            .unwrap()
            .messages
            .values()
            .cloned()
            .collect()
    }

    /// How many times a mailbox's folders were looked up (by name).
    pub fn folder_lookups(&self, mailbox: &str) -> usize {
        let state = self.state.lock().unwrap();
        state.lookups.get(mailbox).copied().unwrap_or_default()
    }

    pub fn folders(&self, mailbox: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        let mut names: Vec<String> = state
            .folders
            .get(mailbox)
            .map(|f| f.iter().map(|(_, n)| n.clone()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Requests served, by mailbox.
    pub fn served(&self) -> HashMap<String, usize> {
        self.state.lock().unwrap().served.clone()
    }

    /// Time the served requests were counted against each mailbox's four (from the request
    /// read to the response made, latency included).
    pub fn busy(&self) -> HashMap<String, std::time::Duration> {
        self.state.lock().unwrap().busy.clone()
    }

    /// From the first served request to the last answer: how long the mailboxes were worked.
    pub fn span(&self) -> std::time::Duration {
        let state = self.state.lock().unwrap();
        let first = state.spans.values().map(|(first, _)| *first).min();
        let last = state.spans.values().map(|(_, last)| *last).max();
        match (first, last) {
            (Some(first), Some(last)) => last - first,
            _ => std::time::Duration::ZERO,
        }
    }

    /// Each mailbox's first request and last answer, as offsets from the first request
    /// served to any.
    pub fn spans(&self) -> HashMap<String, (std::time::Duration, std::time::Duration)> {
        let state = self.state.lock().unwrap();
        let Some(start) = state.spans.values().map(|(first, _)| *first).min() else {
            return HashMap::new();
        };
        state
            .spans
            .iter()
            .map(|(m, (first, last))| (m.clone(), (*first - start, *last - start)))
            .collect()
    }

    /// Forgets what was served so far (requests, busy time, span, most at once), so that the
    /// next figures are of what follows.
    pub fn reset_counts(&self) {
        let mut state = self.state.lock().unwrap();
        state.served.clear();
        state.busy.clear();
        state.spans.clear();
        state.max_in_flight = 0;
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }

    /// Whether `holds` is true of the fake's state, or comes to be within 5 s.
    async fn comes_to(&self, holds: impl Fn(&State) -> bool) -> bool {
        for _ in 0..1000 {
            if holds(&self.state.lock().unwrap()) {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        false
    }

    async fn handle(&self, request: Request) -> Response {
        if request.method == "POST" && request.path == "/token" {
            return Response::json(
                200,
                &json!({"access_token": "graph-token", "expires_in": 3599}),
            );
        }
        if let Some(id) = request.path.strip_prefix("/upload/") {
            return self.upload(id, &request);
        }
        if request.header("authorization") != Some("Bearer graph-token") {
            return error(401, "InvalidAuthenticationToken", "no or bad token");
        }
        let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
        let ["v1.0", "users", mailbox, rest @ ..] = segments.as_slice() else {
            return error(404, "ResourceNotFound", "no such route");
        };
        let mailbox = mailbox.to_string();
        if !self.mailboxes.lock().unwrap().contains(&mailbox) {
            return error(404, "ErrorInvalidUser", "The requested user is invalid.");
        }
        // Exchange's MailboxConcurrency: 4 requests at once per mailbox.
        let since = std::time::Instant::now();
        {
            let mut state = self.state.lock().unwrap();
            let n = state.in_flight.entry(mailbox.clone()).or_default();
            if *n >= 4 {
                self.throttled.fetch_add(1, Ordering::SeqCst);
                return error(429, "ApplicationThrottled", "MailboxConcurrency")
                    .with_header("retry-after", "1");
            }
            *n += 1;
            let now = *n;
            state.max_in_flight = state.max_in_flight.max(now);
            *state.served.entry(mailbox.clone()).or_default() += 1;
            state.spans.entry(mailbox.clone()).or_insert((since, since));
        }
        let lookup = rest == ["mailFolders", "inbox", "childFolders"] && request.method == "GET";
        let response = if lookup
            && self.lookups_wait_for_a_draft.load(Ordering::SeqCst)
            && !self
                .comes_to(|state| state.drafted.contains(&mailbox))
                .await
        {
            error(503, "ServiceUnavailable", "no draft came")
        } else if lookup
            && self.lookups_wait_for_a_removed_draft.load(Ordering::SeqCst)
            && !self
                .comes_to(|state| state.undrafted.contains(&mailbox))
                .await
        {
            error(503, "ServiceUnavailable", "no draft was removed")
        } else if matches!(request.method.as_str(), "POST" | "PUT" | "PATCH")
            && !self.uploads.admit(&mailbox, request.body.len())
        {
            error(429, "ApplicationThrottled", "uploads").with_header("retry-after", "1")
        } else if request.method == "POST"
            && matches!(rest, ["messages", _, "attachments"])
            && taken(&self.drop_files)
        {
            error(504, "GatewayTimeout", "the gateway gave up")
        } else if taken(&self.throttle) {
            self.throttled.fetch_add(1, Ordering::SeqCst);
            let status = if self.throttled.load(Ordering::SeqCst) % 2 == 1 {
                429
            } else {
                503
            };
            error(status, "ApplicationThrottled", "slow down").with_header("retry-after", "1")
        } else {
            let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            let response = self.route(&mailbox, &rest, &request);
            spoil::spoiled(&self.spoil, &request.method, rest.as_slice(), response)
        };
        let stalled = match rest {
            ["mailFolders", _, "messages"] => Some(&self.stall_messages),
            ["messages"] => Some(&self.stall_drafts),
            ["messages", _, "attachments"] => Some(&self.stall_files),
            _ => None,
        };
        if request.method == "POST" && stalled.is_some_and(taken) {
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        }
        // The latency is the service's answer time, its own work included: the answer leaves
        // `latency_ms` after the request was read, however long making it took.
        let latency = self.latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            answer_at(since + std::time::Duration::from_millis(latency as u64)).await;
        }
        let mut state = self.state.lock().unwrap();
        *state.in_flight.get_mut(&mailbox).unwrap() -= 1;
        let now = std::time::Instant::now();
        if let Some((_, last)) = state.spans.get_mut(&mailbox) {
            *last = now;
        }
        *state.busy.entry(mailbox).or_default() += since.elapsed();
        response
    }

    fn route(&self, mailbox: &str, rest: &[String], request: &Request) -> Response {
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        if request.body.len() > REQUEST_LIMIT {
            return error(
                413,
                "RequestBodyTooLarge",
                "the request is larger than 4 MB",
            );
        }
        // What takes time is done before the fake's state is locked, as Graph serves a
        // tenant's requests side by side.
        let mut draft = None;
        let mut body = Value::Null;
        match (request.method.as_str(), rest.as_slice()) {
            ("POST", ["messages"]) => draft = Some(draft_from_mime(&request.body)),
            ("POST" | "PATCH", _) => {
                body = serde_json::from_slice(&request.body).unwrap_or_default()
            }
            _ => {}
        }
        let mut state = self.state.lock().unwrap();
        match (request.method.as_str(), rest.as_slice()) {
            ("GET", ["mailFolders", "inbox", "childFolders"]) => {
                *state.lookups.entry(mailbox.to_string()).or_default() += 1;
                let filter = request.query.get("$filter").cloned().unwrap_or_default();
                let wanted = filter
                    .strip_prefix("displayName eq '")
                    .and_then(|f| f.strip_suffix('\''))
                    .map(|f| f.replace("''", "'"))
                    .unwrap_or_default();
                let found: Vec<Value> = state
                    .folders
                    .get(mailbox)
                    .into_iter()
                    .flatten()
                    .filter(|(_, name)| *name == wanted)
                    .map(|(id, name)| json!({"id": id, "displayName": name}))
                    .collect();
                Response::json(200, &json!({"value": found}))
            }
            ("POST", ["mailFolders", "inbox", "childFolders"]) => {
                let name = body["displayName"].as_str().unwrap_or_default().to_string();
                let folders = state.folders.entry(mailbox.to_string()).or_default();
                if folders.iter().any(|(_, n)| *n == name) {
                    return error(
                        400,
                        "ErrorFolderExists",
                        "A folder with the specified name already exists.",
                    );
                }
                let id = format!("folder-{}-{}", folders.len(), mailbox.len());
                folders.push((id.clone(), name.clone()));
                Response::json(201, &json!({"id": id, "displayName": name}))
            }
            ("POST", ["messages"]) => {
                let (mut json, attachments) = match draft.take().expect("parsed above") {
                    Ok(draft) => draft,
                    Err(refused) => return refused,
                };
                state.next += 1;
                let id = format!("msg-{}", state.next);
                json["id"] = json!(id);
                state.drafted.insert(mailbox.to_string());
                state.messages.insert(
                    id.clone(),
                    Message {
                        id,
                        mailbox: mailbox.to_string(),
                        folder: None,
                        is_draft: true,
                        json: json.clone(),
                        properties: HashMap::new(),
                        attachments,
                    },
                );
                Response::json(201, &json)
            }
            ("GET", ["messages", id, "attachments"]) => match state.messages.get(*id) {
                Some(m) => {
                    let from: usize = request
                        .query
                        .get("$skiptoken")
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0);
                    let page = match self.attachment_page.load(Ordering::SeqCst) {
                        0 => usize::MAX,
                        n => n,
                    };
                    let files: Vec<Value> = m.attachments.iter().skip(from).take(page).map(|(name, data)| json!({
                        "@odata.type": "#microsoft.graph.fileAttachment", "name": name,
                        "contentType": "application/octet-stream", "size": data.len(), "isInline": false,
                        "contentBytes": base64::engine::general_purpose::STANDARD.encode(data),
                    })).collect();
                    let files: Vec<Value> = match self.items_in_drafts.load(Ordering::SeqCst) {
                        false => files,
                        true => files.iter().map(|f| json!({
                            "@odata.type": "#microsoft.graph.itemAttachment", "name": f["name"],
                        })).collect(),
                    };
                    let mut list = json!({ "value": files });
                    if from.saturating_add(page) < m.attachments.len() {
                        list["@odata.nextLink"] = json!(format!(
                            "http://127.0.0.1:{}/v1.0/users/{mailbox}/messages/{id}/attachments?$skiptoken={}",
                            self.port.lock().unwrap(),
                            from + page
                        ));
                    }
                    Response::json(200, &list)
                }
                None => error(404, "ErrorItemNotFound", "no such message"),
            },
            ("POST", ["mailFolders", _, "messages"]) if taken(&self.refuse_messages) => {
                error(400, "ErrorInvalidProperty", "refused by the test")
            }
            ("POST", ["mailFolders", folder, "messages"]) => {
                let properties: HashMap<String, String> = body["singleValueExtendedProperties"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        (
                            p["id"].as_str().unwrap_or_default().to_string(),
                            p["value"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                // PidTagMessageFlags without the unsent bit (0x8) makes a received message.
                let is_draft = properties
                    .get("Integer 0x0E07")
                    .and_then(|f| f.parse::<u32>().ok())
                    .is_none_or(|f| f & 0x8 != 0);
                // Its files, when the request carries them.
                let files = match body["attachments"].as_array().map(Vec::as_slice) {
                    Some(files) => match files.iter().map(posted_file).collect() {
                        Ok(files) => files,
                        Err(refused) => return refused,
                    },
                    None => Vec::new(),
                };
                state.next += 1;
                let id = format!("msg-{}", state.next);
                let mut json = body;
                if let Some(fields) = json.as_object_mut() {
                    fields.remove("attachments");
                }
                json["hasAttachments"] = json!(!files.is_empty());
                json["id"] = json!(id);
                json["isDraft"] = json!(is_draft);
                json["receivedDateTime"] = json!(properties.get("SystemTime 0x0E06"));
                state.messages.insert(
                    id.clone(),
                    Message {
                        id: id.clone(),
                        mailbox: mailbox.to_string(),
                        folder: Some(folder.to_string()),
                        is_draft,
                        json: json.clone(),
                        properties,
                        attachments: files,
                    },
                );
                Response::json(201, &json)
            }
            ("POST", ["messages", id, "attachments"]) => {
                let file = match posted_file(&body) {
                    Ok(file) => file,
                    Err(refused) => return refused,
                };
                match state.messages.get_mut(*id) {
                    Some(m) => {
                        m.attachments.push(file);
                        Response::json(201, &json!({"id": "att"}))
                    }
                    None => error(404, "ErrorItemNotFound", "no such message"),
                }
            }
            ("POST", ["messages", id, "attachments", "createUploadSession"]) => {
                let item = &body["AttachmentItem"];
                state.next += 1;
                let upload = format!("u{}", state.next);
                let size = item["size"].as_u64().unwrap_or(0) as usize;
                if size < UPLOAD_MIN {
                    return error(
                        400,
                        "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
                        "The attachment size is smaller than the minimum size for an upload session.",
                    );
                }
                state.uploads.insert(
                    upload.clone(),
                    (
                        mailbox.to_string(),
                        id.to_string(),
                        item["name"].as_str().unwrap_or_default().to_string(),
                        size,
                        Vec::new(),
                    ),
                );
                let port = *self.port.lock().unwrap();
                Response::json(
                    201,
                    &json!({"uploadUrl": format!("http://127.0.0.1:{port}/upload/{upload}")}),
                )
            }
            ("DELETE", ["messages", id])
                if state.messages.get(*id).is_some_and(|m| !m.is_draft)
                    && taken(&self.refuse_removals) =>
            {
                error(400, "ErrorInvalidRequest", "refused by the test")
            }
            ("PATCH", ["messages", id]) => match state.messages.get_mut(*id) {
                Some(m) => {
                    for p in body["singleValueExtendedProperties"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        m.properties.insert(
                            p["id"].as_str().unwrap_or_default().to_string(),
                            p["value"].as_str().unwrap_or_default().to_string(),
                        );
                    }
                    Response::json(200, &json!({"id": m.id}))
                }
                None => error(404, "ErrorItemNotFound", "no such message"),
            },
            ("DELETE", ["messages", id]) => match state.messages.remove(*id) {
                Some(removed) => {
                    if removed.is_draft {
                        state.undrafted.insert(removed.mailbox);
                    }
                    Response::new(204, "application/json", Vec::new())
                }
                None => error(404, "ErrorItemNotFound", "no such message"),
            },
            ("GET", ["mailFolders", "drafts", "messages"]) => {
                let filter = request.query.get("$filter").cloned().unwrap_or_default();
                let wanted = filter
                    .strip_prefix("internetMessageId eq '")
                    .and_then(|f| f.strip_suffix('\''))
                    .map(|f| f.replace("''", "'"));
                let found: Vec<Value> = state
                    .messages
                    .values()
                    .filter(|m| m.mailbox == mailbox && m.is_draft)
                    .filter(|m| {
                        wanted.is_some()
                            && m.json["internetMessageId"].as_str() == wanted.as_deref()
                    })
                    .map(|m| json!({"id": m.id}))
                    .collect();
                Response::json(200, &json!({"value": found}))
            }
            ("GET", ["mailFolders", folder, "messages"]) => {
                let filter = request.query.get("$filter").cloned().unwrap_or_default();
                let quoted_after = |text: &str, before: &str| {
                    text.split_once(before)
                        .and_then(|(_, rest)| rest.split_once('\''))
                        .map(|(value, _)| value.to_string())
                        .unwrap_or_default()
                };
                let (id, value) = (
                    quoted_after(&filter, "ep/id eq '"),
                    quoted_after(&filter, "ep/value eq '"),
                );
                // `$expand=singleValueExtendedProperties($filter=id eq '...')`: that property
                // of each message found, when it has it.
                let expand = request
                    .query
                    .get("$expand")
                    .map(|e| quoted_after(e, "id eq '"));
                let found: Vec<Value> = state
                    .messages
                    .values()
                    .filter(|m| m.mailbox == mailbox && m.folder.as_deref() == Some(folder))
                    .filter(|m| m.properties.get(&id) == Some(&value))
                    .map(|m| match &expand {
                        None => json!({"id": m.id}),
                        Some(wanted) => json!({"id": m.id, "singleValueExtendedProperties":
                            m.properties.get(wanted).map(|v| vec![json!({"id": wanted, "value": v})]).unwrap_or_default()}),
                    })
                    .collect();
                Response::json(200, &json!({"value": found}))
            }
            _ => error(404, "ResourceNotFound", "no such route"),
        }
    }

    fn upload(&self, id: &str, request: &Request) -> Response {
        if request.body.len() > REQUEST_LIMIT {
            return error(413, "RequestBodyTooLarge", "chunk over 4 MB");
        }
        if let Ok(left) =
            self.throttle_uploads
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        {
            let status = if left % 2 == 1 { 503 } else { 429 };
            return error(status, "ServiceUnavailable", "try the chunk again")
                .with_header("retry-after", "1");
        }
        if taken(&self.refuse_chunks) {
            return error(400, "ErrorInvalidRequest", "refused by the test");
        }
        let owner = self
            .state
            .lock()
            .unwrap()
            .uploads
            .get(id)
            .map(|u| u.0.clone());
        if owner.is_some_and(|mailbox| !self.uploads.admit(&mailbox, request.body.len())) {
            return error(429, "ApplicationThrottled", "uploads").with_header("retry-after", "1");
        }
        let mut state = self.state.lock().unwrap();
        let Some((mailbox, message, name, size, data)) = state.uploads.get_mut(id) else {
            return error(404, "ItemNotFound", "no such upload");
        };
        // Content-Range: bytes START-END/TOTAL; a chunk sent again lands where it belongs.
        let range = request.header("content-range").unwrap_or_default();
        let Some((start, end)) = range
            .strip_prefix("bytes ")
            .and_then(|r| r.split('/').next())
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
        else {
            return error(400, "InvalidRange", "no Content-Range");
        };
        if start > data.len() || end + 1 - start != request.body.len() || end >= *size {
            return error(
                416,
                "InvalidRange",
                "the range does not follow what was received",
            );
        }
        let lost = self
            .lose_chunk
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            == Ok(1);
        if lost {
            return Response::json(
                200,
                &json!({"nextExpectedRanges": [format!("{}-", data.len())]}),
            );
        }
        data.truncate(start);
        data.extend_from_slice(&request.body);
        if data.len() < *size {
            return Response::json(
                200,
                &json!({"nextExpectedRanges": [format!("{}-", data.len())]}),
            );
        }
        let (message, name, data) = (message.clone(), name.clone(), std::mem::take(data));
        let _ = mailbox;
        state.uploads.remove(id);
        if let Some(m) = state.messages.get_mut(&message) {
            m.attachments.push((name, data));
        }
        self.uploads_done.fetch_add(1, Ordering::SeqCst);
        Response::new(201, "application/json", Vec::new())
    }
}

mod alarm;
mod parse;
mod spoil;
mod uploads;

/// Takes one of the N left in `switch`: whether there was one.
fn taken(switch: &AtomicUsize) -> bool {
    switch
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}
