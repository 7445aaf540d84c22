//! Subjects: one pattern for every kind of item, whatever the partner
//! (docs/partners/subjects.md).

use super::{duration_words, header_text, names, Person};
use crate::item::{Call, CallOutcome, Content, Item};

/// One pattern for every kind (docs/partners/subjects.md):
/// `[<mark>] <what> from <sender> to <recipients>|in <group> [(<call outcome, length>)]`.
pub(super) fn subject(item: &Item, from: &Person, to: &[&Person]) -> String {
    let from = from.label();
    let to = format!("to {}", names(to));
    let (what, whom, detail, mark): (String, String, Option<String>, Option<&str>) = match &item
        .content
    {
        Content::Sms { .. } => ("SMS".into(), to, None, None),
        Content::Mms { .. } => ("MMS".into(), to, None, None),
        Content::Call(call) => ("Voice call".into(), to, Some(call_detail(call)), None),
        Content::WhatsAppCall(call) => ("WhatsApp call".into(), to, Some(call_detail(call)), None),
        Content::WhatsApp(m) => {
            let whom = match &m.group {
                Some(group) => format!("in {}", group.name.as_deref().unwrap_or(&group.id)),
                None => to,
            };
            let mark = m.deleted_at.is_some().then_some("[Deleted by sender]");
            ("WhatsApp message".into(), whom, None, mark)
        }
        Content::CellTrust(c) => {
            let what = match c.channel.to_ascii_lowercase().as_str() {
                "sms" => "SMS".to_string(),
                "mms" => "MMS".to_string(),
                "voice" => "voice call".to_string(),
                "chat" => "chat message".to_string(),
                "whatsapp" => "WhatsApp message".to_string(),
                other => format!("{other} message"),
            };
            let detail = c.call.as_ref().map(call_detail);
            (format!("CellTrust SL2 {what}"), to, detail, None)
        }
        Content::Email { .. } => unreachable!("passed through before subjects are made"),
    };
    let mut subject = format!("{what} from {from} {whom}");
    if let Some(detail) = detail {
        subject = format!("{subject} ({detail})");
    }
    if let Some(mark) = mark {
        subject = format!("{mark} {subject}");
    }
    header_text(&subject)
}

/// A call's outcome, and its length when it was answered or left a voicemail.
fn call_detail(call: &Call) -> String {
    match call.outcome {
        CallOutcome::Answered | CallOutcome::Voicemail => format!(
            "{}, {}",
            call.outcome.as_str(),
            duration_words(call.duration_secs)
        ),
        CallOutcome::Missed | CallOutcome::Rejected => call.outcome.as_str().to_string(),
    }
}
