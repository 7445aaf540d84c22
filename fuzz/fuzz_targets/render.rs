//! The renderer's property: whatever the partner bytes, the output parses as RFC 5322 and no
//! partner byte creates a header. The input is split at 0xFF into the item's strings.
#![no_main]
use comms_archiver::item::{Content, Conversation, Direction, Item, ItemKey, Participant, Role};
use comms_archiver::render::{render, RenderContext};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data
        .split(|&b| b == 0xFF)
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let mut next = || parts.next().unwrap_or_default();
    let party = |role, name: String, address: String| Participant {
        role: Some(role),
        phone: None,
        address: Some(address).filter(|a| !a.is_empty()),
        display_name: Some(name),
        email: None,
        archived: role == Role::From,
    };
    let item = Item {
        partner_id: next(),
        time: chrono::DateTime::from_timestamp(1_795_000_000, 0).unwrap(),
        direction: Direction::Inbound,
        conversation: Some(Conversation {
            id: next(),
            name: Some(next()),
        }),
        participants: vec![
            party(Role::From, next(), next()),
            party(Role::To, next(), next()),
        ],
        content: Content::Sms { text: next() },
    };
    let ctx = RenderContext {
        connector: "o2",
        partner: "telemessage-o2",
        invalid_domain: "telemessage.invalid",
    };
    let bytes = render(
        &item,
        &ItemKey::new("o2", &item.partner_id),
        &ctx,
        &[None, None],
    )
    .expect("renders");
    let text = String::from_utf8_lossy(&bytes);
    let head = &text[..text.find("\r\n\r\n").expect("a header block")];
    for line in head.split("\r\n") {
        assert!(!line.contains('\r') && !line.contains('\n'));
        if !line.starts_with([' ', '\t']) {
            let name = line.split(':').next().unwrap().to_ascii_lowercase();
            assert!(
                comms_archiver::render::headers::WRITTEN.contains(&name.as_str()),
                "header {name:?} came from partner data"
            );
        }
    }
    assert!(mail_parser::MessageParser::default()
        .parse(&bytes)
        .is_some());
});
