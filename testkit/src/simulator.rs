//! A partner simulator: serves the TeleMessage (O2 and WhatsApp), CellTrust SL2 and Veritas
//! Merge1 HTTPS contracts of `docs/partners/` on loopback, from the export drops under a
//! fixtures directory or from generated data for any day, with switches for the faults a
//! real partner shows: 5xx, slow answers, truncated pages, 429 with Retry-After, an item
//! repeated across pages, tokens that expire mid-run, and an outage.
//!
//! Routes (base URLs `/telemessage/`, `/celltrust/`, `/merge1/`):
//! - `POST /telemessage/auth/login`, `GET /telemessage/{o2,whatsapp}/items`
//! - `POST /celltrust/oauth/token`, `GET /celltrust/session`,
//!   `GET /celltrust/domains/{domain}/items`, `GET /celltrust/domains/{domain}/units/{unit}/items`
//! - `GET /merge1/items` (header `X-Api-Key`)
//! - `GET /{telemessage,celltrust}/files/{partner}/{day}/{path}`: media

use base64::Engine;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use comms_archiver::http_server::{self, Request, Response};
use comms_archiver::sources::partner::{AuthKind, Descriptor, REGISTRY};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Fault switches; each count is consumed by the requests it hits. Flip them at any time.
#[derive(Debug, Default)]
pub struct Faults {
    /// The next N data requests answer 503 without Retry-After.
    pub fail_5xx: AtomicU32,
    /// The next N data requests answer 429 with `Retry-After: retry_after_secs`.
    pub rate_limit: AtomicU32,
    pub retry_after_secs: AtomicU32,
    /// The next N pages are cut off in the middle of their JSON.
    pub truncate_pages: AtomicU32,
    /// Every answer waits this long first.
    pub slow_ms: AtomicU64,
    /// The last item of every page is served again at the top of the next.
    pub duplicate_across_pages: AtomicBool,
    /// Tokens stop working after this many requests (0: never).
    pub token_ttl: AtomicU32,
    /// Every request answers 503: the partner is down.
    pub down: AtomicBool,
}

fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// What the simulator serves and whom it lets in.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// A directory holding `telemessage-o2/`, `telemessage-whatsapp/`, `celltrust-sl2/` and
    /// `merge1-celltrust/` export drops.
    pub fixtures: PathBuf,
    /// The one secret every partner accepts: TeleMessage password, SL2 client secret and
    /// Merge1 API key.
    pub secret: String,
    /// TeleMessage username and SL2 client id.
    pub user: String,
    /// "domain_admin" or "ou_admin".
    pub sl2_role: String,
    /// The unit of an OU admin.
    pub sl2_unit: Option<String>,
    pub sl2_domain: String,
    pub sl2_environment: String,
    /// Items generated per partner for a day with no fixture (0: such a day is empty).
    pub generate_per_day: usize,
    /// A realistic generated day for days with no fixture, instead of `generate_per_day`.
    pub workload: Option<crate::workload::Workload>,
}

impl SimulatorConfig {
    pub fn new(fixtures: impl Into<PathBuf>) -> Self {
        SimulatorConfig {
            fixtures: fixtures.into(),
            secret: "simulator".into(),
            user: "archiver".into(),
            sl2_role: "domain_admin".into(),
            sl2_unit: None,
            sl2_domain: "contoso".into(),
            sl2_environment: "azure-global".into(),
            generate_per_day: 0,
            workload: None,
        }
    }
}

/// The simulator's state.
pub struct Simulator {
    config: SimulatorConfig,
    faults: Faults,
    /// Issued tokens and how often each was used.
    tokens: Mutex<HashMap<String, u32>>,
    issued: AtomicU64,
    /// Data requests answered, by any outcome.
    pub requests: AtomicU64,
    /// Generated records of recent windows, so that paging through a large day does not
    /// generate it again for every page.
    generated: Mutex<HashMap<String, Arc<Vec<Value>>>>,
}

/// How the partners of a vendor's base URL sign in (all of a vendor's partners sign in
/// alike).
fn vendor_auth(vendor: &str) -> Option<AuthKind> {
    REGISTRY.iter().find(|d| d.vendor == vendor).map(|d| d.auth)
}

/// The partner whose feed is at this path under its vendor's base URL.
fn feed_of(segments: &[&str]) -> Option<&'static Descriptor> {
    let (vendor, feed) = segments.split_first()?;
    let feed = feed.join("/");
    REGISTRY
        .iter()
        .copied()
        .find(|d| d.vendor == *vendor && !d.feed.is_empty() && d.feed == feed)
}

impl Simulator {
    pub fn new(config: SimulatorConfig) -> Arc<Simulator> {
        Arc::new(Simulator {
            config,
            faults: Faults::default(),
            tokens: Mutex::new(HashMap::new()),
            issued: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            generated: Mutex::new(HashMap::new()),
        })
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Serves on `addr` (port 0 picks a free one); returns the bound address and the task.
    pub async fn start(
        self: &Arc<Self>,
        addr: SocketAddr,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = http_server::bind(addr, "partner simulator").await?;
        let bound = listener.local_addr()?;
        let sim = self.clone();
        let handler = move |request: Request| {
            let sim = sim.clone();
            async move { sim.handle(request).await }
        };
        let task = tokio::spawn(http_server::serve(listener, Arc::new(handler)));
        Ok((bound, task))
    }

    /// Answers one request.
    pub async fn handle(&self, request: Request) -> Response {
        let slow = self.faults.slow_ms.load(Ordering::SeqCst);
        if slow > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(slow)).await;
        }
        if self.faults.down.load(Ordering::SeqCst) {
            return Response::text(503, "partner down\n");
        }
        let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
        match (request.method.as_str(), segments.as_slice()) {
            ("POST", [vendor, "auth", "login"])
                if vendor_auth(vendor) == Some(AuthKind::Session) =>
            {
                self.login(&request, "username", "password", "token")
            }
            ("POST", [vendor, "oauth", "token"])
                if vendor_auth(vendor) == Some(AuthKind::ClientCredentials) =>
            {
                self.login(&request, "client_id", "client_secret", "access_token")
            }
            ("GET", [_, ..]) => {
                self.requests.fetch_add(1, Ordering::SeqCst);
                if let Some(denied) = self.authenticate(&request, segments[0]) {
                    return denied;
                }
                if take(&self.faults.fail_5xx) {
                    return Response::text(503, "try again\n");
                }
                if take(&self.faults.rate_limit) {
                    let after = self.faults.retry_after_secs.load(Ordering::SeqCst);
                    return Response::text(429, "slow down\n")
                        .with_header("retry-after", after.to_string());
                }
                self.get(&request, &segments)
            }
            _ => Response::text(404, "no such route\n"),
        }
    }

    fn login(
        &self,
        request: &Request,
        user_field: &str,
        secret_field: &str,
        token_field: &str,
    ) -> Response {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let user_ok = body[user_field].as_str() == Some(self.config.user.as_str());
        let secret_ok = body[secret_field].as_str() == Some(self.config.secret.as_str());
        if !(user_ok && secret_ok) {
            return Response::text(401, "wrong credentials\n");
        }
        let token = format!("sim-{}", self.issued.fetch_add(1, Ordering::SeqCst));
        self.tokens
            .lock()
            .expect("not poisoned")
            .insert(token.clone(), 0);
        Response::json(200, &json!({ token_field: token, "expires_in": 3600 }))
    }

    fn authenticate(&self, request: &Request, vendor: &str) -> Option<Response> {
        if vendor_auth(vendor) == Some(AuthKind::ApiKey) {
            let ok = request.header("x-api-key") == Some(self.config.secret.as_str());
            return (!ok).then(|| Response::text(401, "bad API key\n"));
        }
        let token = request
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "));
        let ttl = self.faults.token_ttl.load(Ordering::SeqCst);
        let mut tokens = self.tokens.lock().expect("not poisoned");
        match token.and_then(|t| tokens.get_mut(t)) {
            Some(uses) if ttl == 0 || *uses < ttl => {
                *uses += 1;
                None
            }
            _ => Some(Response::text(401, "token expired or unknown\n")),
        }
    }

    fn get(&self, request: &Request, segments: &[&str]) -> Response {
        if let Some(partner) = feed_of(segments) {
            return self.page(request, partner.name, None);
        }
        // CellTrust SL2 finds its feeds: the session says which domain and units it may read.
        match segments {
            ["celltrust", "session"] => Response::json(
                200,
                &json!({
                    "role": self.config.sl2_role,
                    "domain": self.config.sl2_domain,
                    "organizational_unit": self.config.sl2_unit,
                    "environment": self.config.sl2_environment,
                }),
            ),
            ["celltrust", "domains", domain, rest @ ..] => {
                if !domain.eq_ignore_ascii_case(&self.config.sl2_domain) {
                    return Response::text(404, "no such domain\n");
                }
                let unit = match rest {
                    ["items"] => None,
                    ["units", unit, "items"] => Some(*unit),
                    _ => return Response::text(404, "no such route\n"),
                };
                if self.config.sl2_role == "ou_admin" {
                    let own = self.config.sl2_unit.as_deref().unwrap_or("");
                    if !unit.is_some_and(|u| u.eq_ignore_ascii_case(own)) {
                        return Response::text(403, "outside the OU admin's unit\n");
                    }
                }
                self.page(request, "celltrust-sl2", Some(unit))
            }
            [_, "files", partner, day, rest @ ..] => self.file(partner, day, rest),
            _ => Response::text(404, "no such route\n"),
        }
    }

    fn file(&self, partner: &str, day: &str, rest: &[&str]) -> Response {
        let relative: PathBuf = rest.iter().collect();
        let safe = REGISTRY.iter().any(|d| d.name == partner)
            && NaiveDate::parse_from_str(day, "%Y-%m-%d").is_ok()
            && relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !safe {
            return Response::text(404, "no such file\n");
        }
        if let ["gen", name] = rest {
            return match crate::workload::media_bytes(name) {
                Some(bytes) => Response::new(200, "application/octet-stream", bytes),
                None => Response::text(404, "no such file\n"),
            };
        }
        match std::fs::read(self.config.fixtures.join(partner).join(day).join(relative)) {
            Ok(bytes) => Response::new(200, "application/octet-stream", bytes),
            Err(_) => Response::text(404, "no such file\n"),
        }
    }

    /// One page of a partner's records in the window `from`..`to`.
    fn page(&self, request: &Request, partner: &str, unit: Option<Option<&str>>) -> Response {
        let parse = |k: &str| {
            request
                .query
                .get(k)
                .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        let (Some(from), Some(to)) = (parse("from"), parse("to")) else {
            return Response::text(400, "from and to (RFC 3339) are required\n");
        };
        let limit: usize = request
            .query
            .get("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(100)
            .max(1);
        let offset: usize = request
            .query
            .get("cursor")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let records = match self.records(partner, from, to) {
            Ok(records) => records,
            Err(e) => return Response::text(500, format!("{e}\n")),
        };
        let records: Vec<&Value> = records
            .iter()
            .filter(|r| match unit {
                None => true,
                Some(unit) => {
                    let of = r["organizational_unit"].as_str().filter(|u| !u.is_empty());
                    match (unit, of) {
                        (None, None) => true,
                        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                        _ => false,
                    }
                }
            })
            .collect();
        let end = (offset + limit).min(records.len());
        let items: Vec<&Value> = records.get(offset..end).unwrap_or_default().to_vec();
        let next = if end < records.len() {
            let repeat = self.faults.duplicate_across_pages.load(Ordering::SeqCst) && limit > 1;
            Some((if repeat { end - 1 } else { end }).to_string())
        } else {
            None
        };
        let mut body = json!({ "items": items, "next_cursor": next })
            .to_string()
            .into_bytes();
        if take(&self.faults.truncate_pages) {
            body.truncate(body.len() / 2);
        }
        Response::new(200, "application/json", body)
    }

    /// Every record of a partner timed in `from`..`to`: fixtures first, then generated days.
    /// Windows made only of generated days are kept for the pages that follow.
    fn records(
        &self,
        partner: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> std::io::Result<Arc<Vec<Value>>> {
        let root = self.config.fixtures.join(partner);
        let cache_key = format!("{partner} {from} {to}");
        if let Some(hit) = self.generated.lock().expect("not poisoned").get(&cache_key) {
            return Ok(hit.clone());
        }
        let mut out = Vec::new();
        let mut from_fixtures = false;
        let mut day = from.date_naive();
        while day.and_hms_opt(0, 0, 0).expect("midnight").and_utc() < to {
            let dir = root.join(day.to_string());
            let mut records = if dir.is_dir() {
                from_fixtures = true;
                fixture_records(partner, &dir, day)?
            } else if let Some(workload) = &self.config.workload {
                workload.records(partner, day)
            } else {
                generate(partner, day, self.config.generate_per_day)
            };
            records.retain(|r| {
                r.get("_time")
                    .and_then(|t| t.as_str())
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t >= from && t < to)
            });
            for r in &mut records {
                if let Some(map) = r.as_object_mut() {
                    map.remove("_time");
                }
            }
            out.extend(records);
            day = day.succ_opt().expect("not the end of time");
        }
        let out = Arc::new(out);
        if !from_fixtures {
            let mut cache = self.generated.lock().expect("not poisoned");
            if cache.len() >= 16 {
                cache.clear();
            }
            cache.insert(cache_key, out.clone());
        }
        Ok(out)
    }
}

/// The records of one fixture delivery, in manifest order, with media paths made
/// relative to the API's base URL and each record's time under `_time`.
fn fixture_records(partner: &str, dir: &Path, day: NaiveDate) -> std::io::Result<Vec<Value>> {
    let manifest: Value = serde_json::from_slice(&std::fs::read(dir.join("MANIFEST.json"))?)?;
    let mut out = Vec::new();
    for file in manifest["files"].as_array().cloned().unwrap_or_default() {
        let name = file["name"].as_str().unwrap_or_default();
        let bytes = std::fs::read(dir.join(name))?;
        if partner == "merge1-celltrust" {
            let time = mail_parser::MessageParser::default()
                .parse_headers(&bytes)
                .and_then(|m| m.date().map(|d| d.to_rfc3339()))
                .unwrap_or_default();
            out.push(json!({
                "id": name,
                "mime": base64::engine::general_purpose::STANDARD.encode(&bytes),
                "_time": time,
            }));
            continue;
        }
        for line in String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            let mut record: Value = serde_json::from_str(line)?;
            rebase_media(&mut record, partner, day);
            let time = record["timestamp"].clone();
            record["_time"] = time;
            out.push(record);
        }
    }
    Ok(out)
}

fn rebase_media(record: &mut Value, partner: &str, day: NaiveDate) {
    let rebase = |file: &mut Value| {
        if let Some(path) = file.as_str() {
            *file = Value::String(format!("files/{partner}/{day}/{path}"));
        }
    };
    // get_mut, not indexing: indexing a mutable Value inserts nulls for missing keys.
    if let Some(list) = record.get_mut("attachments").and_then(Value::as_array_mut) {
        for file in list.iter_mut().filter_map(|a| a.get_mut("file")) {
            rebase(file);
        }
    }
    let recording = record.get_mut("call").and_then(|c| c.get_mut("recording"));
    if let Some(file) = recording.and_then(|r| r.get_mut("file")) {
        rebase(file);
    }
}

/// `n` records of a day for a partner, deterministic, spread over the day: one employee of
/// 50 (`user<k>@contoso.com`, numbers +447700950000 to +447700950049, apart from the numbers
/// of the demo mapping files) and one outside party each.
pub fn generate(partner: &str, day: NaiveDate, n: usize) -> Vec<Value> {
    let start = day.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    (0..n)
        .map(|i| {
            let time = start + Duration::milliseconds((i as i64 * 86_400_000) / n.max(1) as i64);
            let ts = time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let k = i % 50;
            let employee = format!("+4477009{:05}", 50_000 + k);
            let email = format!("user{k}@contoso.com");
            let other = format!("+4477009{:05}", 60_000 + i % 997);
            let id = format!("GEN-{partner}-{day}-{i:06}");
            let text = format!("Generated message {i} of {day}");
            let mut record = match partner {
                "telemessage-o2" => json!({
                    "archive_message_id": id, "message_type": "SMS", "timestamp": ts,
                    "direction": "outbound", "archive_initiator": employee,
                    "from": {"number": employee, "email": email}, "to": [{"number": other}], "text": text,
                }),
                "telemessage-whatsapp" => json!({
                    "message_id": id, "type": "message", "timestamp": ts, "direction": "outbound",
                    "archived_number": employee, "chat": {"id": format!("GEN-CHAT-{k}")},
                    "from": {"number": employee, "email": email}, "to": [{"number": other}], "text": text,
                }),
                "celltrust-sl2" => json!({
                    "id": id, "timestamp": ts, "source_type": "P2P", "channel": "sms", "domain": "contoso",
                    "direction": "outbound", "sl2_user": email,
                    "from": {"address": email, "number": employee}, "to": [{"number": other}], "text": text,
                }),
                _ => {
                    let eml = format!(
                        "From: <{email}>\r\nTo: <{}@sms.merge1.example>\r\nDate: {}\r\nMessage-ID: <{id}@merge1.example>\r\nSubject: CellTrust SMS\r\n\r\n{text}\r\n",
                        other.trim_start_matches('+'),
                        time.to_rfc2822()
                    );
                    json!({ "id": id, "mime": base64::engine::general_purpose::STANDARD.encode(eml) })
                }
            };
            record["_time"] = Value::String(ts);
            record
        })
        .collect()
}
