//! `archiver.oversize = "drop-attachments"`: a message over `max_item_bytes` is imported
//! without its largest files, one more left out at a time until it fits, with one text part
//! in their place that lists each (name, type, size, SHA-256 and the stage key where the
//! file is kept whole, as the partner delivered it).

use super::day::Fitted;
use crate::item::{sha256_hex, Attachment, Item, ItemKey};
use crate::ledger::Ledger;
use crate::report::{LeftOut, Reason};
use std::fmt::Write as _;

/// The name of the text part that lists the files left out.
pub const NOTE_NAME: &str = "files-left-out.txt";

/// The message rendered without the fewest largest files that bring it under `limit`, and
/// those files' listings with their index among the item's files; SizeExceeded when even
/// without every file it is too large (a long text, a partner's own message).
pub(super) fn leave_out_files(
    item: &Item,
    key: &ItemKey,
    connector: &str,
    limit: u64,
    render: impl Fn(&Item) -> Result<Vec<u8>, (Reason, String)>,
) -> Result<Fitted, (Reason, String)> {
    let files = item.content.files();
    let mut by_size: Vec<usize> = (0..files.len()).collect();
    by_size.sort_by_key(|&i| std::cmp::Reverse(files[i].data.len()));
    let date = item.time.date_naive();
    let mut listings: Vec<(LeftOut, usize)> = Vec::new();
    for (n, &at) in by_size.iter().enumerate() {
        let file = files[at];
        let sha256 = sha256_hex(&file.data);
        listings.push((
            LeftOut {
                name: file.name.clone(),
                content_type: file.content_type.clone(),
                bytes: file.data.len() as u64,
                kept: Ledger::file_key(connector, date, key, &sha256),
                sha256,
            },
            at,
        ));
        // Files are base64 in the message, 4/3 of their size: no need to render what
        // cannot fit yet.
        let rest: u64 = by_size[n + 1..]
            .iter()
            .map(|&i| files[i].data.len() as u64)
            .sum();
        if rest / 3 * 4 > limit {
            continue;
        }
        let left_out: Vec<&Attachment> = listings.iter().map(|(_, i)| files[*i]).collect();
        let note = Attachment {
            name: NOTE_NAME.into(),
            content_type: "text/plain; charset=utf-8".into(),
            data: note(&listings, limit).into_bytes(),
        };
        let Some(content) = item.content.leaving_out(&left_out, note) else {
            break;
        };
        let reduced = Item {
            partner_id: item.partner_id.clone(),
            time: item.time,
            direction: item.direction,
            conversation: item.conversation.clone(),
            participants: item.participants.clone(),
            content,
        };
        let rendered = render(&reduced)?;
        if rendered.len() as u64 <= limit {
            return Ok((rendered, listings));
        }
    }
    Err((
        Reason::SizeExceeded,
        format!(
            "the message exceeds the limit of {limit} bytes even without its {} file(s); held \
             until archiver.max_item_bytes is raised and the day is re-driven",
            files.len()
        ),
    ))
}

/// The text that takes the files' place in the message.
fn note(listings: &[(LeftOut, usize)], limit: u64) -> String {
    let mut text = format!(
        "This copy was imported without {} file(s), to bring it under the mailbox size limit \
         of {limit} bytes (archiver.max_item_bytes). Each file is kept whole, exactly as the \
         partner delivered it, in comms-archiver's stage, where its SHA-256 verifies it.\r\n",
        listings.len()
    );
    for (file, _) in listings {
        let _ = write!(
            text,
            "\r\nfile name: {}\r\ntype: {}\r\nsize: {} bytes\r\nSHA-256: {}\r\nstage key: {}\r\n",
            file.name, file.content_type, file.bytes, file.sha256, file.kept
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::{Content, Direction, Participant};

    fn file(name: &str, bytes: usize) -> Attachment {
        Attachment {
            name: name.into(),
            content_type: "application/octet-stream".into(),
            data: vec![name.as_bytes()[0]; bytes],
        }
    }

    fn mms(media: Vec<Attachment>) -> Item {
        Item {
            partner_id: "O2-1".into(),
            time: chrono::DateTime::from_timestamp(1_795_000_000, 0).unwrap(),
            direction: Direction::Outbound,
            conversation: None,
            participants: vec![Participant::default()],
            content: Content::Mms {
                text: Some("see attached".into()),
                media,
            },
        }
    }

    /// A stand-in renderer: the text, then each file as base64 would weigh it.
    fn weigh(item: &Item) -> Result<Vec<u8>, (Reason, String)> {
        let files: usize = item
            .content
            .files()
            .iter()
            .map(|f| f.data.len() * 4 / 3)
            .sum();
        Ok(vec![b'x'; 1000 + files])
    }

    #[test]
    fn only_the_largest_files_that_must_go_are_left_out() {
        let item = mms(vec![
            file("small", 10_000),
            file("big", 900_000),
            file("mid", 300_000),
        ]);
        let key = ItemKey::new("o2", "O2-1");
        let (message, left_out) = leave_out_files(&item, &key, "o2", 500_000, weigh).unwrap();
        assert!(message.len() <= 500_000);
        let names: Vec<&str> = left_out.iter().map(|(l, _)| l.name.as_str()).collect();
        assert_eq!(names, ["big"], "mid and small still fit");
        let (listing, at) = &left_out[0];
        assert_eq!(item.content.files()[*at].name, "big");
        assert_eq!(listing.bytes, 900_000);
        assert_eq!(listing.sha256, sha256_hex(&item.content.files()[*at].data));
        assert_eq!(
            listing.kept,
            format!(
                "staged/o2/{}/files/{key}/{}",
                item.time.date_naive(),
                listing.sha256
            )
        );
        // Two must go when one is not enough.
        let (_, left_out) = leave_out_files(&item, &key, "o2", 200_000, weigh).unwrap();
        let names: Vec<&str> = left_out.iter().map(|(l, _)| l.name.as_str()).collect();
        assert_eq!(names, ["big", "mid"]);
    }

    #[test]
    fn the_listing_takes_the_files_place_and_too_much_text_is_still_too_large() {
        let item = mms(vec![file("big", 900_000)]);
        let key = ItemKey::new("o2", "O2-1");
        let render = |reduced: &Item| {
            let files = reduced.content.files();
            assert_eq!(files.len(), 1);
            assert_eq!(files[0].name, NOTE_NAME);
            let text = String::from_utf8(files[0].data.clone()).unwrap();
            assert!(text.contains("file name: big") && text.contains("size: 900000 bytes"));
            weigh(reduced)
        };
        leave_out_files(&item, &key, "o2", 500_000, render).unwrap();
        // Even without any file, 1000 bytes of text do not fit in 500.
        let e = leave_out_files(&item, &key, "o2", 500, weigh).unwrap_err();
        assert_eq!(e.0, Reason::SizeExceeded);
        assert!(e.1.contains("even without its 1 file(s)"), "{}", e.1);
    }
}
