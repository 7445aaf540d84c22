//! The renderer's promises: the expected headers, determinism, and no partner byte in the
//! header block.

use super::*;
use crate::item::{Attachment, Conversation, Direction, Quote, WhatsAppMessage};
use chrono::TimeZone;

const CTX: RenderContext<'static> = RenderContext {
    connector: "o2",
    partner: "telemessage-o2",
    invalid_domain: "telemessage.invalid",
};

fn person(role: Role, phone: &str, name: Option<&str>) -> Participant {
    Participant {
        role: Some(role),
        phone: Some(phone.to_string()),
        display_name: name.map(str::to_string),
        ..Default::default()
    }
}

fn sms(text: &str) -> Item {
    Item {
        partner_id: "O2-1".into(),
        time: Utc.with_ymd_and_hms(2026, 11, 20, 8, 15, 2).unwrap(),
        direction: Direction::Inbound,
        conversation: Some(Conversation {
            id: "T-1".into(),
            name: None,
        }),
        participants: vec![
            person(Role::From, "+447700900555", None),
            person(Role::To, "+447700900101", Some("Alice Smith")),
        ],
        content: Content::Sms { text: text.into() },
    }
}

fn render_sms(item: &Item) -> String {
    let key = ItemKey::new("o2", &item.partner_id);
    let bytes = render(
        item,
        &key,
        &CTX,
        &[None, Some("alice.smith@contoso.com".into())],
    )
    .unwrap();
    String::from_utf8(bytes).unwrap()
}

fn header_block(message: &str) -> &str {
    &message[..message.find("\r\n\r\n").unwrap()]
}

#[test]
fn sms_has_the_expected_headers() {
    let m = render_sms(&sms("Running 10 min late"));
    let head = header_block(&m);
    // lettre encodes a display name that starts with '+' (RFC 2047); the address is plain.
    assert!(
        head.contains(" <+447700900555@telemessage.invalid>\r\n"),
        "{head}"
    );
    assert!(
        head.contains("To: \"Alice Smith\" <alice.smith@contoso.com>"),
        "{head}"
    );
    assert!(head.contains("Subject: SMS from +44 7700 900555 to Alice Smith"));
    assert!(
        head.contains("Date: Fri, 20 Nov 2026 08:15:02 +0000"),
        "{head}"
    );
    let key = ItemKey::new("o2", "O2-1");
    assert!(head.contains(&format!("Message-ID: {}", key.message_id())));
    assert!(head.contains("X-Comms-Archiver-Kind: sms"));
    assert!(head.contains("In-Reply-To: <conv-"));
    assert!(m.contains("Running 10 min late"));
}

#[test]
fn rendering_is_deterministic() {
    let mut item = sms("hello");
    item.content = Content::Mms {
        text: Some("photo".into()),
        media: vec![Attachment {
            name: "a.png".into(),
            content_type: "image/png".into(),
            data: vec![1, 2, 3],
        }],
    };
    assert_eq!(render_sms(&item), render_sms(&item));
}

#[test]
fn control_characters_never_start_a_header() {
    let mut item = sms("body\r\nBcc: body@evil.example");
    item.participants[0].display_name =
        Some("Mr Wong\r\nBcc: attacker@evil.example\nX-Injected: 1".into());
    item.partner_id = "ID\r\nX-Forged: yes".into();
    item.conversation = Some(Conversation {
        id: "T\n\rReply-To: x@evil.example".into(),
        name: None,
    });
    let m = render_sms(&item);
    let head = header_block(&m);
    for line in head.split("\r\n") {
        let lower = line.to_ascii_lowercase();
        assert!(
            !lower.starts_with("bcc:")
                && !lower.starts_with("x-injected:")
                && !lower.starts_with("x-forged:")
                && !lower.starts_with("reply-to:"),
            "forged header line {line:?} in\n{head}"
        );
        // Folded continuation lines start with white space; no bare CR or LF inside.
        assert!(!line.contains('\r') && !line.contains('\n'));
    }
    assert!(head.contains("Mr Wong Bcc: attacker@evil.example X-Injected: 1"));
}

#[test]
fn format_controls_never_reach_names_or_file_names() {
    let spoofed = [
        '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}',
        '\u{2068}', '\u{2069}', '\u{200B}', '\u{200C}', '\u{200D}', '\u{200E}', '\u{200F}',
        '\u{FEFF}',
    ];
    let mut item = sms("body keeps \u{202E}this\u{202C} as delivered");
    item.participants[1].display_name = Some("Alice\u{202E}htimS\u{200B}".into());
    item.content = Content::Mms {
        text: Some("see \u{2067}file\u{2069}".into()),
        media: vec![Attachment {
            name: "invoice\u{202E}fdp.exe".into(),
            content_type: "application/octet-stream".into(),
            data: vec![1, 2, 3],
        }],
    };
    let m = render_sms(&item);
    let parsed = mail_parser::MessageParser::default()
        .parse(m.as_bytes())
        .unwrap();
    let name = parsed.to().unwrap().first().unwrap().name().unwrap();
    assert_eq!(name, "AlicehtimS");
    let subject = parsed.subject().unwrap();
    let file = parsed.attachments().next().unwrap();
    let file_name = mail_parser::MimeHeaders::attachment_name(file).unwrap();
    assert_eq!(file_name, "invoicefdp.exe");
    for text in [name, subject, file_name] {
        assert!(!text.chars().any(|c| spoofed.contains(&c)), "{text:?}");
    }
    // The body listing names the file the same way; the text itself is the partner's.
    let body = parsed.body_text(0).unwrap();
    assert!(body.contains("[Attachment: invoicefdp.exe"), "{body}");
    assert!(body.contains("see \u{2067}file\u{2069}"), "{body}");
}

/// An MMS with these files (name, content type, bytes), rendered.
fn render_mms(files: Vec<(&str, &str, Vec<u8>)>) -> String {
    let mut item = sms("files");
    item.content = Content::Mms {
        text: Some("see the files".into()),
        media: files
            .into_iter()
            .map(|(name, kind, data)| Attachment {
                name: name.into(),
                content_type: kind.into(),
                data,
            })
            .collect(),
    };
    render_sms(&item)
}

/// A partner's file arrives as its bytes, whatever they hold: every file goes as base64, so
/// no line of a text file can pose as the message's MIME boundary (which derives from the
/// item key, and so can be guessed), and no transport rewrites its line breaks.
#[test]
fn every_file_is_base64_and_comes_back_as_sent() {
    let key = ItemKey::new("o2", "O2-1");
    let boundary = format!("--=_ca_{}", key.as_str());
    let imitation = format!(
        "before\r\n{boundary}\r\nContent-Type: image/png\r\nContent-Disposition: attachment; \
         filename=\"fake.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\nQUJD\r\n{boundary}--\r\nafter\r\n"
    );
    let files: Vec<(&str, &str, Vec<u8>)> = vec![
        ("imitation.txt", "text/plain", imitation.into_bytes()),
        (
            "unix.txt",
            "text/plain",
            b"line one\nline two\n\nend".to_vec(),
        ),
        ("cr.txt", "text/plain", b"old mac\rline\r".to_vec()),
        (
            "trailing.txt",
            "text/plain",
            b"spaces at the end   \r\n\r\n".to_vec(),
        ),
        (
            "utf8.txt",
            "text/plain",
            "Grüße, café\n".as_bytes().to_vec(),
        ),
        ("long.csv", "text/csv", "a,".repeat(600).into_bytes()),
        (
            "card.vcf",
            "text/vcard",
            b"BEGIN:VCARD\r\nFN:A\r\nEND:VCARD\r\n".to_vec(),
        ),
        (
            "photo.jpg",
            "image/jpeg",
            (0..=255u8).cycle().take(3000).collect(),
        ),
    ];
    let m = render_mms(
        files
            .iter()
            .map(|(name, kind, data)| (*name, *kind, data.clone()))
            .collect(),
    );
    let parsed = mail_parser::MessageParser::default()
        .parse(m.as_bytes())
        .unwrap();
    let got: Vec<_> = parsed.attachments().collect();
    assert_eq!(got.len(), files.len(), "{m}");
    for (part, (name, _, data)) in got.iter().zip(&files) {
        assert_eq!(
            mail_parser::MimeHeaders::attachment_name(*part),
            Some(*name)
        );
        assert_eq!(part.encoding, mail_parser::Encoding::Base64, "{name}");
        assert!(part.contents() == &data[..], "{name} differs");
    }
}

/// A partner's content type says what a file is, and nothing more: a composite type (which
/// would make the file a MIME container of its own) or parameters that rename it or pose
/// as structure do not reach the message; the file comes back, as sent, under its name.
#[test]
fn a_partner_content_type_only_types_the_file() {
    let kinds = [
        (
            "a.bin",
            "multipart/mixed; boundary=\"zz\"",
            "application/octet-stream",
        ),
        ("b.eml", "message/rfc822", "application/octet-stream"),
        (
            "c.txt",
            "text/plain; name=\"other.exe\"; charset=iso-8859-1",
            "text/plain",
        ),
        ("d.png", "image/png; boundary=\"=_ca_x\"", "image/png"),
        ("e.pdf", "Application/PDF", "application/pdf"),
        ("f.dat", "no type at all", "application/octet-stream"),
    ];
    let m = render_mms(
        kinds
            .iter()
            .enumerate()
            .map(|(i, (name, kind, _))| (*name, *kind, vec![i as u8; 10 + i]))
            .collect(),
    );
    let parsed = mail_parser::MessageParser::default()
        .parse(m.as_bytes())
        .unwrap();
    let got: Vec<_> = parsed.attachments().collect();
    assert_eq!(got.len(), kinds.len(), "{m}");
    for (i, (part, (name, _, essence))) in got.iter().zip(&kinds).enumerate() {
        use mail_parser::MimeHeaders;
        assert_eq!(part.attachment_name(), Some(*name));
        let kind = part.content_type().unwrap();
        let shown = format!("{}/{}", kind.ctype(), kind.subtype().unwrap_or_default());
        assert_eq!(shown.to_ascii_lowercase(), *essence, "{name}");
        assert!(kind.attribute("boundary").is_none(), "{name}");
        assert!(kind.attribute("name").is_none_or(|n| n == *name), "{name}");
        let charset = (*name == "c.txt").then_some("iso-8859-1");
        assert_eq!(kind.attribute("charset"), charset, "{name}");
        assert!(part.contents() == vec![i as u8; 10 + i], "{name} differs");
    }
}

#[test]
fn whatsapp_reply_threads_to_the_quoted_message() {
    let mut item = sms("");
    item.content = Content::WhatsApp(WhatsAppMessage {
        text: Some("Agreed".into()),
        quote: Some(Quote {
            partner_id: "WA-0".into(),
            author: Some("Alice".into()),
            text: Some("Shall we?".into()),
        }),
        deleted_at: Some(Utc.with_ymd_and_hms(2026, 11, 20, 9, 0, 0).unwrap()),
        ..Default::default()
    });
    let m = render_sms(&item);
    let quoted = ItemKey::new("o2", "WA-0").message_id();
    assert!(header_block(&m).contains(&format!("In-Reply-To: {quoted}")));
    assert!(header_block(&m).contains("Subject: [Deleted by sender] WhatsApp message"));
    assert!(m.contains("deleted by the sender at 2026-11-20 09:00:00 UTC"));
}

#[test]
fn pass_through_keeps_the_partner_message() {
    let mut item = sms("");
    item.content = Content::Email {
        raw: b"From: a@contoso.com\r\nMessage-ID: <p@partner>\r\n\r\nhi\r\n".to_vec(),
        carries: None,
    };
    let key = ItemKey::new("merge1", "M-1");
    let out = String::from_utf8(render(&item, &key, &CTX, &[]).unwrap()).unwrap();
    assert!(out.starts_with("X-Comms-Archiver-Connector: o2\r\n"));
    assert!(out.ends_with("From: a@contoso.com\r\nMessage-ID: <p@partner>\r\n\r\nhi\r\n"));
    assert_eq!(out.matches("Message-ID").count(), 1);
}

#[test]
fn partner_fields_named_like_ours_are_kept_renamed() {
    let forged = ItemKey::new("merge1", "M-2");
    let mut item = sms("");
    item.content = Content::Email {
        raw: format!(
            "From: a@contoso.com\r\nx-comms-archiver-item-key: {forged}\r\n\
             X-Comms-Archiver-Connector:\r\n other\r\nX-Comms-Archiver-Item-Id: M-2\r\n\
             Subject: X-Comms-Archiver-Item-Key: {forged}\r\n\r\n\
             X-Comms-Archiver-Item-Key: {forged}\r\n"
        )
        .into_bytes(),
        carries: None,
    };
    let key = ItemKey::new("merge1", "M-1");
    let out = render(&item, &key, &CTX, &[]).unwrap();
    let text = String::from_utf8(out.clone()).unwrap();
    let head = header_block(&text);
    let ours: Vec<&str> = head
        .split("\r\n")
        .filter(|l| l.to_ascii_lowercase().starts_with("x-comms-archiver-"))
        .collect();
    assert_eq!(ours.len(), 7, "only our own fields: {ours:?}");
    assert!(head.contains(&format!("X-Original-x-comms-archiver-item-key: {forged}")));
    assert!(head.contains("X-Original-X-Comms-Archiver-Connector:\r\n other"));
    assert!(head.contains("X-Original-X-Comms-Archiver-Item-Id: M-2"));
    assert_eq!(own_item_key(&out).as_deref(), Some(key.as_str()));
    // The body is the partner's, as delivered.
    assert!(text.ends_with(&format!("\r\n\r\nX-Comms-Archiver-Item-Key: {forged}\r\n")));
}

#[test]
fn the_first_item_key_field_is_ours() {
    let m = b"X-Comms-Archiver-Item-Key: aaa\r\nFrom: x\r\nX-Comms-Archiver-Item-Key: bbb\r\n\r\n";
    assert_eq!(own_item_key(m).as_deref(), Some("aaa"));
    let folded = b"X-Comms-Archiver-Item-Key:\r\n abc\r\n\r\nX-Comms-Archiver-Item-Key: zzz\r\n";
    assert_eq!(own_item_key(folded).as_deref(), Some("abc"));
    assert_eq!(
        own_item_key(b"From: x\r\n\r\nX-Comms-Archiver-Item-Key: zzz\r\n"),
        None
    );
}

/// Every kind's subject follows the one pattern of docs/partners/subjects.md.
#[test]
fn every_kind_has_a_subject_of_one_pattern() {
    use crate::item::{Call, CallOutcome, CellTrustItem};
    let call = |outcome, secs| Call {
        start: Utc.with_ymd_and_hms(2026, 11, 20, 8, 15, 2).unwrap(),
        duration_secs: secs,
        outcome,
        recording: None,
        transcript: None,
    };
    let celltrust = |channel: &str, call: Option<Call>| {
        Content::CellTrust(CellTrustItem {
            channel: channel.into(),
            domain: "contoso".into(),
            organizational_unit: None,
            text: Some("hi".into()),
            media: Vec::new(),
            call,
        })
    };
    let whatsapp = |group: Option<&str>, deleted: bool| {
        Content::WhatsApp(WhatsAppMessage {
            text: Some("hi".into()),
            group: group.map(|g| Conversation {
                id: "G-1".into(),
                name: Some(g.into()),
            }),
            deleted_at: deleted.then(|| Utc.with_ymd_and_hms(2026, 11, 20, 9, 0, 0).unwrap()),
            ..WhatsAppMessage::default()
        })
    };
    let between = "from +44 7700 900555 to Alice Smith";
    let cases = [
        (Content::Sms { text: "hi".into() }, format!("SMS {between}")),
        (
            Content::Mms {
                text: None,
                media: Vec::new(),
            },
            format!("MMS {between}"),
        ),
        (
            Content::Call(call(CallOutcome::Answered, 252)),
            format!("Voice call {between} (answered, 4m 12s)"),
        ),
        (
            Content::Call(call(CallOutcome::Missed, 0)),
            format!("Voice call {between} (missed)"),
        ),
        (
            Content::Call(call(CallOutcome::Voicemail, 40)),
            format!("Voice call {between} (voicemail, 0m 40s)"),
        ),
        (
            Content::WhatsAppCall(call(CallOutcome::Rejected, 0)),
            format!("WhatsApp call {between} (rejected)"),
        ),
        (whatsapp(None, false), format!("WhatsApp message {between}")),
        (
            whatsapp(Some("Desk"), true),
            "[Deleted by sender] WhatsApp message from +44 7700 900555 in Desk".to_string(),
        ),
        (
            celltrust("SMS", None),
            format!("CellTrust SL2 SMS {between}"),
        ),
        (
            celltrust("voice", Some(call(CallOutcome::Answered, 61))),
            format!("CellTrust SL2 voice call {between} (answered, 1m 1s)"),
        ),
        (
            celltrust("chat", None),
            format!("CellTrust SL2 chat message {between}"),
        ),
    ];
    for (content, want) in cases {
        let mut item = sms("");
        item.content = content;
        let m = render_sms(&item);
        let parsed = mail_parser::MessageParser::default()
            .parse(m.as_bytes())
            .unwrap();
        assert_eq!(parsed.subject(), Some(want.as_str()));
    }
}

/// A partner display name that is only digits does not win over the number: it is shown
/// as the number, with its "+", in international format.
#[test]
fn a_display_name_that_is_a_number_is_shown_as_the_number() {
    let mut item = sms("hi");
    item.participants[0].display_name = Some("447700900555".into());
    let m = render_sms(&item);
    let parsed = mail_parser::MessageParser::default()
        .parse(m.as_bytes())
        .unwrap();
    assert_eq!(
        parsed.from().unwrap().first().unwrap().name(),
        Some("+44 7700 900555")
    );
    // Without a phone number known, the name's digits are read as one.
    item.participants[0].phone = None;
    item.participants[0].address = Some("wa-123".into());
    item.participants[0].display_name = Some("447700900103".into());
    let m = render_sms(&item);
    assert!(m.contains("+44 7700 900103"), "{m}");
    // A name with letters is a name.
    item.participants[0].display_name = Some("Desk 3".into());
    assert!(render_sms(&item).contains("Desk 3"));
}

/// The body opens with who, where and what: the conversation, each participant with number
/// and address, the archived line, partner, kind and direction, then the content.
#[test]
fn the_body_opens_with_the_conversation_its_people_and_the_archived_line() {
    let mut item = sms("Running 10 min late");
    item.participants[1].archived = true;
    let body = body_of(&render_sms(&item));
    let opening: Vec<&str> = body.lines().take(10).collect();
    assert_eq!(
        opening,
        [
            "Conversation:  1:1, thread T-1",
            "Participants:",
            "  From  +44 7700 900555 <+447700900555@telemessage.invalid>",
            "  To    Alice Smith, +44 7700 900101 <alice.smith@contoso.com>  (archived line)",
            "Archived line: +44 7700 900101",
            "Partner:       telemessage-o2",
            "Kind:          sms",
            "Direction:     inbound",
            "----",
            "",
        ]
    );
    assert_eq!(body.lines().nth(10), Some("Running 10 min late"));

    // A group names itself and counts its members.
    item.content = Content::WhatsApp(WhatsAppMessage {
        text: Some("hi all".into()),
        group: Some(Conversation {
            id: "G-7".into(),
            name: Some("Desk 3".into()),
        }),
        ..WhatsAppMessage::default()
    });
    item.participants
        .push(person(Role::To, "+447700900102", Some("Bob Jones")));
    let body = body_of(&render_sms(&item));
    assert!(
        body.starts_with("Conversation:  group \"Desk 3\" (G-7), 3 members, thread T-1\n"),
        "{body}"
    );
    assert!(
        body.contains("  To    Bob Jones, +44 7700 900102 <"),
        "{body}"
    );
}

fn body_of(message: &str) -> String {
    let parsed = mail_parser::MessageParser::default()
        .parse(message.as_bytes())
        .unwrap();
    parsed.body_text(0).unwrap().replace("\r\n", "\n")
}
