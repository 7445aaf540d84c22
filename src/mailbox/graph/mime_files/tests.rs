use super::*;
use crate::item::{Attachment, Item, ItemKey};
use crate::mailbox::graph::mail_parts::{self, parsed_files, posted_body};
use crate::render::RenderContext;

const CTX: RenderContext<'static> = RenderContext {
    connector: "o2",
    partner: "telemessage-o2",
    invalid_domain: "telemessage.invalid",
};

/// Bytes that look like nothing in particular (a simple generator, seeded).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn file(name: &str, content_type: &str, data: Vec<u8>) -> Attachment {
    Attachment {
        name: name.into(),
        content_type: content_type.into(),
        data,
    }
}

/// An MMS with `media` and `text`, as the renderer writes it.
fn rendered(text: Option<&str>, media: Vec<Attachment>) -> Vec<u8> {
    let mut item = Item::archived_mms("MMS-1", chrono::Utc::now(), text, file("", "", vec![]));
    item.content = crate::item::Content::Mms {
        text: text.map(str::to_string),
        media,
    };
    let key = ItemKey::new("o2", &item.partner_id);
    crate::render::render(&item, &key, &CTX, &[None]).unwrap()
}

/// A file found, as compared: name, type, bytes, inline, Content-ID, span, binary.
type Plain = (
    String,
    String,
    Vec<u8>,
    bool,
    Option<String>,
    (usize, usize),
    bool,
);

/// The files as a comparable list: the bytes of each, whatever form they were found in.
fn plain(found: Vec<Found>) -> Vec<Plain> {
    found
        .into_iter()
        .map(|(p, span, binary)| {
            let data = p.data.into_bytes();
            (
                p.name,
                p.content_type,
                data,
                p.inline,
                p.content_id,
                span,
                binary,
            )
        })
        .collect()
}

#[test]
fn the_renderers_files_are_found_as_a_full_parse_finds_them() {
    let cases: Vec<Vec<Attachment>> = vec![
        vec![file("photo.jpg", "image/jpeg", noise(300_000, 1))],
        // Short files, not ASCII (which the renderer sends as 7bit).
        vec![file("a.bin", "application/octet-stream", vec![0xff])],
        vec![file("b.bin", "application/octet-stream", vec![0x00, 0xfe])],
        vec![file(
            "c.bin",
            "application/octet-stream",
            vec![0x80, 0x81, 0x82],
        )],
        vec![file("d.bin", "application/octet-stream", noise(57, 5))],
        vec![
            file("voice note.amr", "audio/amr", noise(40_000, 6)),
            file("clip \"1\".mp4", "video/mp4", noise(120_001, 7)),
            file(
                "Überweisung März 2026 – Kontoauszug.pdf",
                "application/pdf",
                noise(999, 8),
            ),
        ],
        vec![file(
            &"very long name ".repeat(12),
            "image/png",
            noise(5000, 9),
        )],
        vec![file("odd", "not a type", noise(700, 10))],
    ];
    for (n, media) in cases.into_iter().enumerate() {
        for text in [
            None,
            Some("see attached"),
            Some("line one\r\nline two =3D\r\n"),
        ] {
            let raw = rendered(text, media.clone());
            let walked = files(&raw).unwrap_or_else(|| {
                panic!("case {n}: not walked: {}", String::from_utf8_lossy(&raw))
            });
            assert_eq!(walked.len(), media.len(), "case {n}");
            assert!(walked
                .iter()
                .all(|(p, _, _)| matches!(p.data, mail_parts::Content::Base64(_))));
            let parsed = parsed_files(&raw).unwrap();
            assert_eq!(plain(walked), plain(parsed), "case {n}, text {text:?}");
        }
    }
}

#[test]
fn a_partner_text_imitating_a_boundary_stays_text() {
    let key = ItemKey::new("o2", "MMS-1");
    let imitation = format!(
        "before\r\n--=_ca_{k}\r\nContent-Type: image/png\r\nContent-Disposition: attachment; \
         filename=\"fake.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\nQUJD\r\n--=_ca_{k}--\r\nafter",
        k = key.as_str()
    );
    let raw = rendered(
        Some(&imitation),
        vec![file("real.jpg", "image/jpeg", noise(2000, 11))],
    );
    let walked = files(&raw).expect("walked");
    assert_eq!(walked.len(), 1);
    assert_eq!(walked[0].0.name, "real.jpg");
    assert_eq!(plain(walked), plain(parsed_files(&raw).unwrap()));
}

#[test]
fn other_shapes_are_left_to_the_full_parse() {
    // A text file: its text is read in its charset, which only the full parse does.
    let raw = rendered(
        None,
        vec![file(
            "card.vcf",
            "text/vcard",
            b"BEGIN:VCARD\r\nEND:VCARD\r\n".to_vec(),
        )],
    );
    assert!(files(&raw).is_none());
    // A file of ASCII bytes goes as base64 like any other, and is walked.
    let raw = rendered(
        None,
        vec![file("a.bin", "application/octet-stream", b"W".to_vec())],
    );
    assert_eq!(
        plain(files(&raw).unwrap()),
        plain(parsed_files(&raw).unwrap())
    );
    // No files at all.
    assert!(files(&rendered(Some("hello"), vec![])).is_none());
    let message = |kind: &str, body: &str| {
        format!(
            "From: a@example.com\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
             Content-Type: text/plain\r\n\r\nhello\r\n--b\r\nContent-Type: {kind}\r\n\
             Content-Disposition: attachment; filename=\"x\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{body}\r\n--b--\r\n"
        )
        .into_bytes()
    };
    let good = message("image/png", "QUJD\r\nRA==");
    let found = files(&good).expect("the renderer's shape");
    assert_eq!(
        found[0].0.data,
        mail_parts::Content::Base64(b"QUJDRA==".to_vec())
    );
    assert_eq!(plain(found), plain(parsed_files(&good).unwrap()));
    // A file not in base64 (a partner's own message may send one as 7bit).
    let seven_bit = String::from_utf8(message("application/octet-stream", "W"))
        .unwrap()
        .replace("base64", "7bit")
        .into_bytes();
    assert!(files(&seven_bit).is_none());
    assert_eq!(parsed_files(&seven_bit).unwrap().len(), 1);
    for (what, raw) in [
        ("unused bits set", message("image/png", "QR==")),
        ("a character outside base64", message("image/png", "QU*D")),
        ("a group cut short", message("image/png", "QUJDR")),
        ("padding inside", message("image/png", "QQ==QUJD")),
        (
            "a nested multipart",
            message("multipart/related; boundary=\"c\"", "QUJD"),
        ),
        ("a message inside", message("message/rfc822", "QUJD")),
        ("no closing line", {
            let whole = String::from_utf8(message("image/png", "QUJD")).unwrap();
            whole.replace("--b--", "--b").into_bytes()
        }),
        (
            "a line that starts like a boundary",
            message("image/png", "QUJD\r\n--bb\r\nQUJD"),
        ),
        ("no empty line after the headers", {
            let whole = String::from_utf8(message("image/png", "QUJD")).unwrap();
            whole
                .replace("base64\r\n\r\nQUJD", "base64\r\nX-Note: QUJD")
                .into_bytes()
        }),
    ] {
        assert!(files(&raw).is_none(), "{what}");
        // The full parse still reads it: nothing is lost, only the shortcut is not taken.
        assert!(parsed_files(&raw).is_some(), "{what}");
    }
}

#[test]
fn base64_found_is_the_standard_encoding_of_its_bytes() {
    use base64::Engine;
    let standard = base64::engine::general_purpose::STANDARD;
    for len in 0..40 {
        let bytes = noise(len, len as u64 + 100);
        let text = standard.encode(&bytes);
        // As MIME carries it: in lines (short ones here, to have several).
        let wrapped: Vec<u8> = text
            .as_bytes()
            .chunks(8)
            .flat_map(|line| [line, b"\r\n"].concat())
            .collect();
        let found = canonical_base64(&wrapped).expect("canonical");
        assert_eq!(found, text.as_bytes());
        let content = mail_parts::Content::Base64(found);
        assert_eq!(content.len(), len);
        // Posted as found, or encoded from the bytes: the same request.
        let part = |data| mail_parts::Part {
            name: "x".into(),
            content_type: "image/png".into(),
            data,
            inline: false,
            content_id: None,
        };
        assert_eq!(
            posted_body(&part(content.clone())),
            posted_body(&part(mail_parts::Content::Bytes(bytes.clone())))
        );
        assert_eq!(content.into_bytes(), bytes);
    }
    for bad in [&b"QR=="[..], b"QQ=", b"Q=Q=", b"QUJD RA==", b"QUJ\x00"] {
        assert!(
            canonical_base64(bad).is_none(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}
