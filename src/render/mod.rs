//! An item to RFC 5322 bytes.
//!
//! The output is deterministic: Message-ID, MIME boundaries and every header derive from the
//! item, so the same item renders to the same bytes on every run. Partner data never reaches
//! the header block raw: control characters (CR and LF among them) are replaced before lettre
//! encodes the value, text bodies are quoted-printable and files base64, so no partner line
//! can pose as a MIME boundary, and a file comes back as its bytes.

use crate::item::{Call, Content, Item, ItemKey, Participant, Role};
use chrono::{DateTime, Utc};
use lettre::message::header::{
    ContentTransferEncoding, ContentType, HeaderName, HeaderValue, Headers,
};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::Address;
use std::fmt::Write as _;

mod files;
pub mod headers;
mod opening;
mod subject;

use subject::subject;

/// What the renderer needs to know besides the item.
#[derive(Debug, Clone, Copy)]
pub struct RenderContext<'a> {
    pub connector: &'a str,
    /// The partner system, e.g. "telemessage-o2".
    pub partner: &'a str,
    /// Reserved domain for parties without an email, e.g. "telemessage.invalid".
    pub invalid_domain: &'a str,
}

/// The renderer could not produce a message for an item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot render item: {0}")]
pub struct RenderError(String);

/// Renders `item` as one RFC 5322 message. `mailboxes[i]` is the mailbox that participant `i`
/// mapped to, if any: copies are addressed with the employee's real address.
pub fn render(
    item: &Item,
    key: &ItemKey,
    ctx: &RenderContext<'_>,
    mailboxes: &[Option<String>],
) -> Result<Vec<u8>, RenderError> {
    let tracking = tracking_headers(item, key, ctx);
    if let Content::Email { raw, .. } = &item.content {
        return Ok(pass_through(raw, key, &tracking, thread_ids(item, ctx)));
    }

    let people: Vec<Person> = item
        .participants
        .iter()
        .enumerate()
        .map(|(i, p)| Person::of(p, mailboxes.get(i).cloned().flatten(), ctx))
        .collect();
    let from_index = item
        .participants
        .iter()
        .position(|p| p.role == Some(Role::From))
        .unwrap_or(0);
    let from = people
        .get(from_index)
        .ok_or_else(|| RenderError("the item has no participants".to_string()))?;
    let mut to: Vec<&Person> = role_of(item, &people, Role::To);
    let cc: Vec<&Person> = role_of(item, &people, Role::Cc);
    if to.is_empty() {
        // Every message needs a recipient: fall back to the other parties, then the sender.
        to = people
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != from_index)
            .map(|(_, p)| p)
            .collect();
        if to.is_empty() {
            to.push(from);
        }
    }

    let mut builder = lettre::Message::builder()
        .from(from.mailbox()?)
        .subject(subject(item, from, &to))
        .date(item.time.into())
        .message_id(Some(key.message_id()));
    for person in &to {
        builder = builder.to(person.mailbox()?);
    }
    for person in &cc {
        builder = builder.cc(person.mailbox()?);
    }
    if let Some(thread) = thread_ids(item, ctx) {
        builder = builder
            .in_reply_to(thread.in_reply_to)
            .references(thread.references);
    }
    for value in tracking {
        builder = builder.raw_header(value);
    }

    let text = format!(
        "{}{}",
        opening::block(item, &people, ctx),
        body_text(item, from, &to)
    );
    let text_part = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .header(ContentTransferEncoding::QuotedPrintable)
        .body(text);
    let files = files::of(&item.content);
    let message = if files.is_empty() {
        builder.singlepart(text_part)
    } else {
        let mut mixed = MultiPart::mixed()
            .boundary(format!("=_ca_{}", key.as_str()))
            .singlepart(text_part);
        for file in files {
            mixed = mixed.singlepart(files::part(file));
        }
        builder.multipart(mixed)
    }
    .map_err(|e| RenderError(e.to_string()))?;
    Ok(message.formatted())
}

/// A participant as it appears in the header block.
struct Person {
    name: String,
    address: String,
}

impl Person {
    fn of(p: &Participant, mailbox: Option<String>, ctx: &RenderContext<'_>) -> Person {
        let address = mailbox
            .or_else(|| {
                p.email
                    .as_deref()
                    .and_then(crate::mapping::normalize_address)
            })
            .unwrap_or_else(|| {
                let local = p
                    .phone
                    .clone()
                    .or_else(|| p.address.as_deref().map(local_part))
                    .unwrap_or_else(|| "unknown".to_string());
                format!("{local}@{}", ctx.invalid_domain)
            });
        // A display name that is only a number says less than the number we know: it is
        // shown as that number, in international format.
        let name = p
            .display_name
            .as_deref()
            .map(|n| match number_only(n) {
                Some(digits) => p
                    .phone
                    .as_deref()
                    .map_or_else(|| pretty_phone(&format!("+{digits}")), pretty_phone),
                None => header_text(n),
            })
            .filter(|n| !n.is_empty())
            .or_else(|| p.phone.as_deref().map(pretty_phone))
            .or_else(|| p.address.as_deref().map(header_text))
            .unwrap_or_default();
        Person { name, address }
    }

    fn mailbox(&self) -> Result<Mailbox, RenderError> {
        let address: Address = self
            .address
            .parse()
            .map_err(|e| RenderError(format!("address '{}': {e}", self.address)))?;
        let name = (!self.name.is_empty()).then(|| self.name.clone());
        Ok(Mailbox::new(name, address))
    }

    /// "Alice Smith", or the address when there is no name.
    fn label(&self) -> &str {
        if self.name.is_empty() {
            &self.address
        } else {
            &self.name
        }
    }
}

fn role_of<'p>(item: &Item, people: &'p [Person], role: Role) -> Vec<&'p Person> {
    item.participants
        .iter()
        .zip(people)
        .filter(|(p, _)| p.role == Some(role))
        .map(|(_, person)| person)
        .collect()
}

/// A partner address made safe as the local part of a `.invalid` address.
fn local_part(address: &str) -> String {
    let cleaned: String = address
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if cleaned.trim_matches('_').is_empty() {
        crate::item::short_hash(&[address])
    } else {
        cleaned
    }
}

/// Invisible characters that reorder or hide text: bidi embeddings, overrides and isolates,
/// zero-width characters and marks, the byte order mark. In a file name or a display name they
/// make "invoice\u{202E}fdp.exe" show as "invoiceexe.pdf".
pub fn is_format_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200B}'..='\u{200F}' | '\u{FEFF}')
}

/// Partner text made safe for a header value: every control character becomes a space, the
/// format controls that spoof what a reader sees are removed, and runs of white space fold to
/// one. lettre then RFC 2047-encodes what is not ASCII.
pub fn header_text(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut space = false;
    for c in raw.chars().filter(|&c| !is_format_control(c)) {
        let c = if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            ' '
        } else {
            c
        };
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    out
}

/// Partner text made safe for a text body: line ends normalized, other controls removed.
fn body_safe(raw: &str) -> String {
    raw.replace("\r\n", "\n")
        .replace('\r', "\n")
        .chars()
        .filter(|&c| c == '\n' || c == '\t' || !c.is_control())
        .collect()
}

/// "+44 7700 900123" for "+447700900123".
/// The digits of a display name that is only a phone number ("447700900103",
/// "+44 7700 900103", "(202) 555-0123"), else None.
fn number_only(name: &str) -> Option<String> {
    let trimmed = name.trim();
    let rest = trimmed.strip_prefix('+').unwrap_or(trimmed);
    if !rest
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')'))
    {
        return None;
    }
    let digits: String = rest.chars().filter(char::is_ascii_digit).collect();
    (6..=15).contains(&digits.len()).then_some(digits)
}

pub fn pretty_phone(e164: &str) -> String {
    phonenumber::parse(None, e164)
        .map(|n| {
            n.format()
                .mode(phonenumber::Mode::International)
                .to_string()
        })
        .unwrap_or_else(|_| e164.to_string())
}

fn names(people: &[&Person]) -> String {
    let shown: Vec<&str> = people.iter().take(3).map(|p| p.label()).collect();
    match people.len() {
        0 => String::new(),
        n if n > 3 => format!("{} and {} others", shown.join(", "), n - 3),
        _ => shown.join(", "),
    }
}

fn duration_words(secs: u64) -> String {
    if secs >= 3600 {
        format!("{}h {}m {}s", secs / 3600, secs / 60 % 60, secs % 60)
    } else {
        format!("{}m {}s", secs / 60, secs % 60)
    }
}

fn utc(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn body_text(item: &Item, from: &Person, to: &[&Person]) -> String {
    let mut out = String::new();
    match &item.content {
        Content::Sms { text } => out.push_str(&body_safe(text)),
        Content::Mms { text, media } => {
            if let Some(text) = text {
                out.push_str(&body_safe(text));
                out.push('\n');
            }
            files::list(&mut out, media);
        }
        Content::Call(call) | Content::WhatsAppCall(call) => {
            describe_call(&mut out, item, call, from, to);
        }
        Content::WhatsApp(m) => {
            if let Some(at) = m.deleted_at {
                let _ = writeln!(
                    out,
                    "[This message was deleted by the sender at {}]\n",
                    utc(at)
                );
            }
            if let Some(quote) = &m.quote {
                let _ = writeln!(
                    out,
                    "In reply to {}:",
                    header_text(quote.author.as_deref().unwrap_or("an earlier message"))
                );
                for line in body_safe(quote.text.as_deref().unwrap_or("")).lines() {
                    let _ = writeln!(out, "> {line}");
                }
                out.push('\n');
            }
            if let Some(text) = &m.text {
                out.push_str(&body_safe(text));
                out.push('\n');
            }
            files::list(&mut out, &m.media);
        }
        Content::CellTrust(c) => {
            let _ = writeln!(
                out,
                "CellTrust SL2 domain {}{}",
                header_text(&c.domain),
                c.organizational_unit
                    .as_deref()
                    .map(|ou| format!(", organizational unit {}", header_text(ou)))
                    .unwrap_or_default()
            );
            out.push('\n');
            if let Some(call) = &c.call {
                describe_call(&mut out, item, call, from, to);
            }
            if let Some(text) = &c.text {
                out.push_str(&body_safe(text));
                out.push('\n');
            }
            files::list(&mut out, &c.media);
        }
        Content::Email { .. } => {}
    }
    out
}

fn describe_call(out: &mut String, item: &Item, call: &Call, from: &Person, to: &[&Person]) {
    let s = call.duration_secs;
    let _ = writeln!(out, "Caller:     {} <{}>", from.label(), from.address);
    for callee in to {
        let _ = writeln!(out, "Callee:     {} <{}>", callee.label(), callee.address);
    }
    let _ = writeln!(out, "Direction:  {}", item.direction.as_str());
    let _ = writeln!(out, "Start:      {}", utc(call.start));
    let _ = writeln!(
        out,
        "Duration:   {s} s ({:02}:{:02}:{:02})",
        s / 3600,
        s / 60 % 60,
        s % 60
    );
    let _ = writeln!(out, "Outcome:    {}", call.outcome.as_str());
    match &call.recording {
        Some(r) => {
            let _ = writeln!(
                out,
                "Recording:  attached ({}, {} bytes)",
                files::name(&r.name),
                r.data.len()
            );
        }
        None => out.push_str("Recording:  none\n"),
    }
    if let Some(transcript) = &call.transcript {
        out.push_str("\nTranscript:\n");
        out.push_str(&body_safe(transcript));
        out.push('\n');
    }
}

struct Thread {
    in_reply_to: String,
    references: String,
}

/// Every message of a conversation replies to one synthetic root, so mail clients thread
/// a chat; a quoted message is replied to directly.
fn thread_ids(item: &Item, ctx: &RenderContext<'_>) -> Option<Thread> {
    let root = item.conversation.as_ref().map(|c| {
        format!(
            "<conv-{}@comms-archiver.invalid>",
            crate::item::short_hash(&[ctx.connector, &c.id])
        )
    });
    let quoted = match &item.content {
        Content::WhatsApp(m) => m
            .quote
            .as_ref()
            .map(|q| ItemKey::new(ctx.connector, &q.partner_id).message_id()),
        _ => None,
    };
    match (root, quoted) {
        (Some(root), Some(quoted)) => Some(Thread {
            in_reply_to: quoted.clone(),
            references: format!("{root} {quoted}"),
        }),
        (Some(id), None) | (None, Some(id)) => Some(Thread {
            in_reply_to: id.clone(),
            references: id,
        }),
        (None, None) => None,
    }
}

fn tracking_headers(item: &Item, key: &ItemKey, ctx: &RenderContext<'_>) -> Vec<HeaderValue> {
    let mut values = vec![
        (headers::CONNECTOR, ctx.connector.to_string()),
        (headers::PARTNER, ctx.partner.to_string()),
        (headers::KIND, item.content.kind().as_str().to_string()),
        (headers::DIRECTION, item.direction.as_str().to_string()),
        (headers::ITEM_ID, header_text(&item.partner_id)),
        (headers::ITEM_KEY, key.as_str().to_string()),
    ];
    if let Some(c) = &item.conversation {
        values.push((headers::CONVERSATION, header_text(&c.id)));
    }
    values
        .into_iter()
        .map(|(name, value)| HeaderValue::new(HeaderName::new_from_ascii_str(name), value))
        .collect()
}

/// A message the partner already rendered: our tracking headers in front, the rest unchanged
/// (a Message-ID of ours only where the partner gave none, and the conversation's thread
/// fields only where the partner threaded nothing).
fn pass_through(
    raw: &[u8],
    key: &ItemKey,
    tracking: &[HeaderValue],
    thread: Option<Thread>,
) -> Vec<u8> {
    let mut block = Headers::new();
    for value in tracking {
        block.insert_raw(value.clone());
    }
    let header_end = crate::message_bytes::header_fields(raw).len();
    let has = |name: &[u8]| {
        raw[..header_end].split(|&b| b == b'\n').any(|line| {
            line.len() > name.len()
                && line[..name.len()].eq_ignore_ascii_case(name)
                && line[name.len()] == b':'
        })
    };
    if !has(b"message-id") {
        block.insert_raw(HeaderValue::new(
            HeaderName::new_from_ascii_str("Message-ID"),
            key.message_id(),
        ));
    }
    if let Some(thread) = thread.filter(|_| !has(b"in-reply-to") && !has(b"references")) {
        for (name, value) in [
            ("In-Reply-To", thread.in_reply_to),
            ("References", thread.references),
        ] {
            block.insert_raw(HeaderValue::new(
                HeaderName::new_from_ascii_str(name),
                value,
            ));
        }
    }
    let mut out = block.to_string().into_bytes();
    out.reserve(raw.len() + 64);
    // The partner's header block, line by line: a field named like one of ours keeps its
    // value under X-Original-..., so nothing the partner wrote reads as ours.
    for line in raw[..header_end].split_inclusive(|&b| b == b'\n') {
        if is_our_field(line) {
            out.extend_from_slice(headers::ORIGINAL_PREFIX.as_bytes());
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(&raw[header_end..]);
    out
}

/// Whether a header line starts a field whose name the archiver owns.
fn is_our_field(line: &[u8]) -> bool {
    let prefix = headers::OWN_PREFIX.as_bytes();
    line.len() > prefix.len()
        && line[..prefix.len()].eq_ignore_ascii_case(prefix)
        && line.contains(&b':')
}

/// The item key a stored message carries in the archiver's own header block: the first
/// X-Comms-Archiver-Item-Key field. Ours always comes before anything a partner wrote (in a
/// passed-through message our block is prepended, and partner fields named like ours are
/// renamed), so a later field of the same name, as in a message imported before that rule,
/// is never taken for ours.
pub fn own_item_key(message: &[u8]) -> Option<String> {
    let name = headers::ITEM_KEY.as_bytes();
    let mut lines = crate::message_bytes::header_fields(message)
        .split(|&b| b == b'\n')
        .peekable();
    while let Some(line) = lines.next() {
        if line.len() <= name.len()
            || !line[..name.len()].eq_ignore_ascii_case(name)
            || line[name.len()] != b':'
        {
            continue;
        }
        let mut value = String::from_utf8_lossy(&line[name.len() + 1..]).into_owned();
        while let Some(next) = lines
            .peek()
            .filter(|l| l.starts_with(b" ") || l.starts_with(b"\t"))
        {
            value.push_str(&String::from_utf8_lossy(next));
            lines.next();
        }
        return Some(value.split_whitespace().collect());
    }
    None
}

#[cfg(test)]
mod tests;
